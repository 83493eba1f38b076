"""The sandbox's parts on their own: who a step is, what is handed to it, how its output
is masked and where its log is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vre.config import Settings
from vre.errors import Invalid
from vre.workflows import run_logs, workspace
from vre.workflows.backends import local, runner, sandbox


def test_step_user_is_never_root() -> None:
    assert sandbox.StepUser.parse("nobody").uid == 65534
    assert sandbox.StepUser.parse("1234:99") == sandbox.StepUser(1234, 99)
    for bad in ("root", "0", "1000:0", "no-such-user-here"):
        with pytest.raises(Invalid):
            sandbox.StepUser.parse(bad)


def test_hand_over_never_follows_links_nor_gives_away_linked_files(tmp_path: Path) -> None:
    outside = tmp_path / "shadow"
    outside.write_text("root's")
    ws = tmp_path / "ws"
    (ws / "results").mkdir(parents=True)
    (ws / "results/mine.txt").write_text("mine")
    os.link(outside, ws / "results/hard")
    (ws / "results/soft").symlink_to(outside)
    user = sandbox.StepUser(65534, 65534)
    sandbox.hand_over(ws, user)
    assert (ws / "results/mine.txt").stat().st_uid == 65534
    assert (ws / "results").stat().st_uid == 65534
    assert outside.stat().st_uid == 0  # neither the hard link nor the symlink moved it
    assert (ws / "results/soft").lstat().st_uid == 65534


def test_logs_live_outside_the_workspace(tmp_path: Path) -> None:
    ws = workspace.create(tmp_path / "home", "alice", "fit.1")
    log = run_logs.log_path(ws, 0, "step")
    assert ws not in log.parents and log.parent == tmp_path / "home/run-logs/alice/fit.1"
    assert oct(run_logs.make_logs(ws).stat().st_mode & 0o777) == "0o700"


def test_a_log_is_never_written_through_a_link(tmp_path: Path) -> None:
    target = tmp_path / "passwd"
    target.write_text("keep")
    log = tmp_path / "logs/000-x.log"
    log.parent.mkdir()
    log.symlink_to(target)
    with pytest.raises(OSError):
        local.open_log(log)
    assert target.read_text() == "keep"


def test_masking_holds_across_pieces_of_one_long_line() -> None:
    secret = "s3cr3t-value"
    masker = local.Masker([secret, "x"])
    text = "a" * 10 + "s3cr3" + "t-value" + "b" * 5 + "x"
    pieces = [text[:13].encode(), text[13:].encode()]
    out = "".join(masker.feed(p) for p in pieces) + masker.close()
    assert secret not in out and out == "a" * 10 + "***" + "b" * 5 + "***"


def test_a_long_line_streams_into_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log"
    command = "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo done"
    outcome = local.run_command(
        command, cwd=tmp_path, log=log, env={"PATH": "/usr/bin:/bin"}, timeout=30,
        should_stop=lambda: False, secrets=["aaaa"],
    )  # fmt: skip
    assert outcome.exit_code == 0
    _, output, last = log.read_text().splitlines()
    assert output == "***" * 750_000  # masked whole, though it arrived in 64 KiB pieces
    assert last == "done"


def test_unisolated_host_copies_staged_inputs(tmp_path: Path) -> None:
    replica = tmp_path / "rse/s/ab/cd/f.txt"
    replica.parent.mkdir(parents=True)
    replica.write_text("bytes")
    replica.chmod(0o444)
    ws = tmp_path / "ws"
    (ws / "inputs/s").mkdir(parents=True)
    (ws / "inputs/s/f.txt").symlink_to(replica)
    env = runner.StepEnvironment(ws, {}, {}, tmp_path / "private")
    env.links = [("inputs/s/f.txt", str(replica), True)]
    runner.for_settings(Settings(step_isolation="unisolated-host"), env)
    staged = ws / "inputs/s/f.txt"
    assert not staged.is_symlink() and staged.read_text() == "bytes"
    staged.write_text("changed")
    assert replica.read_text() == "bytes"


def test_a_missing_bubblewrap_is_a_clear_error(tmp_path: Path) -> None:
    env = runner.StepEnvironment(tmp_path, {}, {}, tmp_path / "private")
    with pytest.raises(Invalid, match=r"bubblewrap \(bwrap\) is not installed"):
        runner.for_settings(Settings(sandbox_executable="/nonexistent/bwrap"), env)


def test_a_step_s_processes_and_files_are_bounded(tmp_path: Path) -> None:
    ws = workspace.create(tmp_path / "home", "alice", "bomb.1")
    env = runner.StepEnvironment(ws, {"HOME": str(ws)}, {}, tmp_path / "private")
    settings = Settings(home=tmp_path / "home", step_processes=64, workspace_quota=100_000)
    steps_in = runner.for_settings(settings, env)
    log = tmp_path / "log"
    command = "ulimit -u; ulimit -f; head -c 1000000 /dev/zero > big"
    outcome = steps_in.run(
        command, log=log, timeout=30, should_stop=lambda: False, hidden=[], name="x"
    )
    assert outcome.exit_code != 0  # the file stopped at the limit
    assert log.read_text().splitlines()[1:3] == ["64", str(100_000 // 1024)]  # KiB
    assert (ws / "big").stat().st_size <= 100_000


def test_each_run_has_a_step_user_of_its_own() -> None:
    """Limits counted per user (processes) and file modes then part runs from each other."""
    first, second = (sandbox.step_user("", "200000-200009", run) for run in (3, 4))
    assert first == sandbox.StepUser(200003, 200003) and second == sandbox.StepUser(200004, 200004)
    assert sandbox.step_user("nobody", "200000-200009", 3) == sandbox.StepUser.parse("nobody")
    with pytest.raises(Invalid, match="VRE_STEP_UIDS"):
        sandbox.step_user("", "0-10", 1)
