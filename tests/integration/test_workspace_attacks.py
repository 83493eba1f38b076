"""Every way a file leaves a workspace, attacked through a real ``vre serve`` and
``vre worker``: downloads, zips, listings, logs, stage-out, uploads.

Steps run in the default sandbox, where ``$VRE_HOME`` is invisible: links a step could
only plant on the unisolated host backend (a hard link to ``vre.db``) are planted by the
test itself, into the step's workspace, exactly where such a step would put them. Each
test holds on either backend.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import stat
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fixtures.server import ROOT_PASSWORD, VREServer, start_server, stop_server
from tests.integration.test_replication import start_worker, stop, wait_for
from tests.integration.test_runs_cli import wait_status
from vre.client import _q
from vre.workflows import run_logs

MIB = 1024 * 1024
QUOTA = 48 * MIB
SETTINGS = {"VRE_WORKSPACE_QUOTA": str(QUOTA), "VRE_STEP_LOG_LIMIT": str(MIB)}
PRIVATE = b"victim's private bytes\n"


@dataclass
class Site:
    server: VREServer
    process: object  # the running `vre serve`
    rse: Path


def _login(url: str, account: str, password: str) -> str:
    answer = httpx.post(f"{url}/api/v1/auth/login", json={"account": account, "password": password})
    answer.raise_for_status()
    return str(answer.json()["token"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("attacks")
    home = base / "home"
    home.mkdir()
    process, url = start_server(home, settings=SETTINGS)
    server = VREServer(url=url, home=home, tokens={"root": _login(url, "root", ROOT_PASSWORD)})
    for name in ("mallory", "victim", "logger", "filler"):
        server.add_account(name, f"{name}-password")
    rse = base / "rse"
    server.cli("rse", "add", "ATTACK-DISK", rse.as_uri())
    server.cli("scope", "add", "mallory.out", "--account", "mallory")
    worker = start_worker(home, VRE_RUN_POLL="0.05", log=base / "worker.log", **SETTINGS)
    here = Site(server, process, rse)
    try:
        yield here
    finally:
        stop(worker)
        stop_server(here.process)  # type: ignore[arg-type]


def spec(*commands: str, inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = ()) -> str:
    step = {"name": "attack", "environment": "docker.io/library/bash:5", "commands": commands}
    document: dict = {
        "version": "0.9.0",
        "workflow": {"type": "serial", "specification": {"steps": [step]}},
    }
    if inputs:
        document["inputs"] = {"files": list(inputs)}
    if outputs:
        document["outputs"] = {"files": list(outputs)}
    return yaml.safe_dump(document)


def submit(site: Site, folder: Path, text: str, name: str, account: str) -> tuple[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reana.yaml").write_text(text)
    site.server.cli("run", str(folder / "reana.yaml"), "--name", name, account=account)
    return f"{name}.1", site.server.home / "workspaces" / account / f"{name}.1"


def finished_run(site: Site, tmp_path: Path, name: str, account: str, *commands: str) -> Path:
    run, ws = submit(site, tmp_path / name, spec("mkdir -p results", *commands), name, account)
    wait_status(site.server, run, account, "finished")
    return ws


@pytest.fixture(scope="module")
def victim_file(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = finished_run(
        site,
        tmp_path_factory.mktemp("victim"),
        "diary",
        "victim",
        f"printf {PRIVATE.decode()!r} > results/private.txt",
    )
    return ws / "results" / "private.txt"


def _refused(answer: httpx.Response, *secrets: bytes) -> str:
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.content[:200])
    for secret in secrets:
        assert secret not in answer.content
    return str(answer.json()["message"])


def _every_entry(archive: bytes) -> bytes:
    opened = zipfile.ZipFile(io.BytesIO(archive))
    return b"".join(opened.read(name) for name in opened.namelist())


def test_planted_links_to_the_database_and_others_files_are_never_served(
    site: Site, victim_file: Path, tmp_path: Path
) -> None:
    home = site.server.home
    ws = finished_run(
        site,
        tmp_path,
        "plant",
        "mallory",
        "echo mine > results/ok.txt",
        "ln -s /etc/shadow results/shadow-link",
        f"ln -s {victim_file} results/victim-link",
        f"ln -s {home}/vre.db results/db-link",
    )
    results = ws / "results"
    os.link(home / "vre.db", results / "db")  # what a step on the host backend can do
    os.link(victim_file, results / "victim-hard")
    os.link("/etc/shadow", results / "shadow-hard")
    shadow = Path("/etc/shadow").read_bytes()[:12]
    secrets = (b"SQLite format 3", PRIVATE, shadow)
    planted = ["db", "db-link", "victim-hard", "victim-link", "shadow-hard", "shadow-link"]
    with site.server.api("mallory") as api:
        for name in planted:
            message = _refused(api.get(f"/runs/plant.1/workspace/results/{name}"), *secrets)
            assert "hard links" in message or "is a link" in message, message
            assert str(home) not in message
        for path in ("results", "."):
            archive = api.get(f"/runs/plant.1/workspace/{_q(path)}")
            assert archive.status_code == 200
            assert not any(s in _every_entry(archive.content) for s in secrets)
        names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
        assert sorted(names) == [".vre-skipped.txt", "results/ok.txt"]
        listed = {e["name"]: e["type"] for e in api.get("/runs/plant.1/workspace").json()["files"]}
    assert {listed[f"results/{n}"] for n in planted if n.endswith("-link")} == {"link"}
    fetched = site.server.cli(
        "fetch",
        "plant.1",
        "results/db",
        "-o",
        str(tmp_path / "got"),
        account="mallory",
        check=False,
    )
    assert fetched.code == 2 and "hard links" in fetched.err
    assert not (tmp_path / "got" / "db").exists()
    _the_database_still_works(site)


def _the_database_still_works(site: Site) -> None:
    """The attack of the issue: after it, a new scope was invisible to other readers and
    gone, with a queued run, after a restart. Here both stay, seen from a second
    connection and by a restarted server."""
    server = site.server
    fds = Path(f"/proc/{site.process.pid}/fd")  # type: ignore[attr-defined]
    assert not [os.readlink(fd) for fd in fds.iterdir() if "(deleted)" in os.readlink(fd)]
    server.cli("scope", "add", "after.attack", "--account", "mallory")
    queued = server.cli("run", str(_queued_spec(server.home.parent)), "--name", "queued")
    assert "queued" in queued.out
    with sqlite3.connect(server.home / "vre.db") as second:
        assert second.execute("SELECT name FROM scopes WHERE name = 'after.attack'").fetchall()
    stop_server(site.process)  # type: ignore[arg-type]
    site.process, url = start_server(server.home, settings=SETTINGS)
    server.url = url
    with server.api() as api:
        assert api.get("/scopes").status_code == 200
        assert "after.attack" in api.get("/scopes").text
        assert api.get("/runs/queued.1").json()["status"] in ("queued", "running", "finished")


def _queued_spec(folder: Path) -> Path:
    path = folder / "queued" / "reana.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(spec("true"))
    return path


def test_stage_out_publishes_no_planted_link(site: Site, victim_file: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("an input\n")
    site.server.cli(
        "upload", str(source), "--scope", "mallory.out", "--rse", "ATTACK-DISK", account="mallory"
    )
    home = site.server.home
    wait = "while [ ! -e results/go ]; do sleep 0.1; done"
    output = "rucio(local, mallory.out, results/out.txt, rse=ATTACK-DISK)"
    plants = {
        "outdb": lambda p: os.link(home / "vre.db", p),
        "outlink": lambda p: p.symlink_to(victim_file),
        "outplain": None,  # the control: the same run publishes its own file
    }
    runs = {}
    for name in plants:
        text = spec(
            "mkdir -p results",
            "echo published > results/out.txt",
            wait,
            inputs=("rucio(local, mallory.out, in.txt)",),
            outputs=(output,),
        )
        runs[name] = submit(site, tmp_path / name, text, name, "mallory")
    text = spec(
        "true",
        inputs=("rucio(local, mallory.out, in.txt)",),
        outputs=("rucio(local, mallory.out, inputs/mallory.out/in.txt, rse=ATTACK-DISK)",),
    )
    again, _ = submit(site, tmp_path / "again", text, "outinput", "mallory")
    for name, plant in plants.items():
        run, ws = runs[name]
        wait_status(site.server, run, "mallory", "running")
        wait_for(lambda ws=ws: (ws / "results" / "out.txt").exists(), what="the output")
        if plant is not None:
            (ws / "results" / "out.txt").unlink()
            plant(ws / "results" / "out.txt")
        (ws / "results" / "go").touch()
    for name in ("outdb", "outlink"):
        state = wait_status(site.server, runs[name][0], "mallory", "failed")
        assert "stage-out" in state["error"] and "not published" in state["error"], state
        assert str(home) not in state["error"]
    state = wait_status(site.server, again, "mallory", "failed")
    assert "is a link" in state["error"], state
    wait_status(site.server, runs["outplain"][0], "mallory", "finished")
    stored = [p.read_bytes() for p in site.rse.rglob("*") if p.is_file()]
    assert b"published\n" in stored
    assert not [b for b in stored if b.startswith(b"SQLite") or PRIVATE in b]
    with site.server.api("mallory") as api:
        _refused(api.get("/runs/outplain.1/workspace/inputs/mallory.out/in.txt"))
        files = api.get("/runs/outplain.1/workspace", params={"path": "inputs"}).json()["files"]
    assert {e["name"]: e["type"] for e in files}["inputs/mallory.out/in.txt"] == "link"


def test_a_fifo_in_the_workspace_blocks_no_download(site: Site, tmp_path: Path) -> None:
    finished_run(
        site, tmp_path, "pipe", "mallory", "mkfifo results/pipe", "echo x > results/ok.txt"
    )
    with site.server.api("mallory") as api:
        assert "FIFO" in _refused(api.get("/runs/pipe.1/workspace/results/pipe"))
        archive = api.get("/runs/pipe.1/workspace/results")
        assert "ok.txt" in zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
        listed = api.get("/runs/pipe.1/workspace", params={"path": "results"}).json()["files"]
        assert {e["name"]: e["type"] for e in listed}["results/pipe"] == "other"
        assert api.get("/health").status_code == 200


def test_a_link_swapped_in_while_downloading_never_returns_the_secret(
    site: Site, victim_file: Path, tmp_path: Path
) -> None:
    ws = finished_run(site, tmp_path, "race", "mallory", "echo public > results/x")
    target, spare = ws / "results" / "x", ws / "results" / ".spare"
    stop_flipping = threading.Event()

    def flip() -> None:
        while not stop_flipping.is_set():
            for make in (
                lambda: spare.write_bytes(b"public\n"),
                lambda: spare.symlink_to(victim_file),
                lambda: os.link(victim_file, spare),
            ):
                spare.unlink(missing_ok=True)
                make()
                os.replace(spare, target)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    answers: dict[int, int] = {}
    try:
        with site.server.api("mallory") as api:
            for attempt in range(200):
                answer = api.get("/runs/race.1/workspace/results/x")
                answers[answer.status_code] = answers.get(answer.status_code, 0) + 1
                assert PRIVATE not in answer.content
                if answer.status_code == 200:
                    assert answer.content == b"public\n"
                if attempt % 10 == 0:
                    zipped = api.get("/runs/race.1/workspace/results")
                    assert PRIVATE not in _every_entry(zipped.content)
    finally:
        stop_flipping.set()
        flipper.join()
    assert set(answers) <= {200, 400, 404, 409} and sum(answers.values()) == 200


def test_setuid_files_come_out_without_the_bit(site: Site, tmp_path: Path) -> None:
    finished_run(
        site,
        tmp_path,
        "setuid",
        "mallory",
        "cp /usr/bin/true results/sb && chmod 4755 results/sb",
        "echo data > results/data.txt && chmod 6666 results/data.txt",
    )
    out = tmp_path / "fetched"
    site.server.cli("fetch", "setuid.1", "results", "-o", str(out), account="mallory")
    archive = zipfile.ZipFile(out / "results.zip")
    modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
    assert modes == {"sb": stat.S_IFREG | 0o755, "data.txt": stat.S_IFREG | 0o644}
    site.server.cli("fetch", "setuid.1", "results/sb", "-o", str(out), account="mallory")
    for fetched in (out / "sb", out / "results.zip"):
        assert stat.S_IMODE(fetched.stat().st_mode) & 0o7111 == 0, oct(fetched.stat().st_mode)
    assert (out / "sb").read_bytes() == Path("/usr/bin/true").read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        ".vre/logs/000-attack.log",
        "./.vre/logs/000-attack.log",
        "a/../.vre/logs/x",
        ".VRE/x",
        ".vre",
    ],
)
def test_logs_cannot_be_written_or_read_through_the_workspace_api(
    site: Site, tmp_path: Path, path: str
) -> None:
    label = "logs-" + str(abs(hash(path)) % 10**6)
    finished_run(site, tmp_path, label, "mallory", "echo the real log")
    with site.server.api("mallory") as api:
        url = f"/runs/{label}.1/workspace/{_q(path)}"
        answer = api.put(url, content=b"forged log\n")
        assert answer.status_code == 403 and ".vre" in answer.json()["message"]
        assert api.get(url).status_code == 403
        assert api.delete(url).status_code in (403, 405)
        assert api.put(f"/runs/{label}.1/workspace//.vre/x", content=b"x").status_code == 400
        logs = api.get(f"/runs/{label}.1/logs").text
    assert "the real log" in logs and "forged" not in logs
    refused = site.server.cli("fetch", f"{label}.1", path, account="mallory", check=False)
    assert refused.code == 2 and "logs" in refused.err


def _memory(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = (line.split(":", 1) for line in lines)
    return {k: int(v.split()[0]) * 1024 for k, v in fields if "kB" in v}


def _streamed(api: httpx.Client, path: str, **params: str) -> int:
    got = 0
    with api.stream("GET", path, params=params) as answer:
        assert answer.status_code == 200
        for chunk in answer.iter_bytes():
            got += len(chunk)
    return got


def test_a_200_mb_log_read_twice_keeps_the_server_flat(site: Site, tmp_path: Path) -> None:
    ws = finished_run(site, tmp_path, "chatty", "logger", "echo start")
    line = b"x" * 99 + b"\n"
    for path in (run_logs.log_path(ws, 0, "attack"), ws / "results" / "big.txt"):
        with open(path, "wb") as handle:  # a chatty step's whole log, a big result
            for _ in range(200):
                handle.write(line * (MIB // 100))
    size = (ws / "results" / "big.txt").stat().st_size
    pid = site.process.pid  # type: ignore[attr-defined]
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak restarts from now
    before = _memory(pid)["VmRSS"]
    with site.server.api("logger") as api:
        for _ in range(2):
            assert _streamed(api, "/runs/chatty.1/logs", full="true") > size
        cut = api.get("/runs/chatty.1/logs")
        assert _streamed(api, "/runs/chatty.1/workspace/results/big.txt") == size
        assert _streamed(api, "/runs/chatty.1/workspace/results") > 0  # the zip
    grown = _memory(pid)["VmHWM"] - before
    assert grown < 64 * MIB, f"the server grew by {grown // MIB} MiB"  # it held 1.6 GB
    assert len(cut.content) < MIB + 4096
    assert "[vre] log truncated at 1048576 bytes" in cut.text and "full=true" in cut.text
    shown = site.server.cli("logs", "chatty.1", account="logger").out
    assert "log truncated" in shown and "--full" in shown


def test_the_workspace_quota_refuses_an_upload(site: Site) -> None:
    with site.server.api("filler") as api:
        created = api.post("/runs", json={"name": "fill", "specification": spec("true")})
        assert created.status_code == 201
        ws = site.server.home / "workspaces" / "filler" / "fill.1"
        assert api.put("/runs/fill.1/workspace/a.bin", content=b"a" * 30 * MIB).status_code == 201
        refused = api.put("/runs/fill.1/workspace/b.bin", content=b"b" * 30 * MIB)
        assert refused.status_code == 413 and "quota" in refused.json()["message"]

        def chunks() -> Iterator[bytes]:  # no declared length: refused on the way
            for _ in range(30):
                yield b"c" * MIB

        refused = api.put("/runs/fill.1/workspace/c.bin", content=chunks())
        assert refused.status_code == 413 and "quota" in refused.json()["message"]
        again = api.put("/runs/fill.1/workspace/a.bin", content=b"d" * 30 * MIB)
        assert again.status_code == 201  # replacing a file counts what it frees
    assert sorted(p.name for p in ws.iterdir()) == ["a.bin"]
    assert (ws / "a.bin").read_bytes()[:1] == b"d"


def test_another_account_cannot_read_or_write_any_of_it(
    site: Site, victim_file: Path, tmp_path: Path
) -> None:
    with site.server.api("victim") as api:
        made = api.put("/runs/diary.1/workspace/notes/today.txt", content=b"dear diary\n")
        assert made.status_code == 201
    ws = victim_file.parent.parent
    assert stat.S_IMODE(ws.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((ws / "notes").stat().st_mode) == 0o700
    assert stat.S_IMODE((ws / "notes" / "today.txt").stat().st_mode) == 0o600
    with site.server.api("mallory") as api:
        for answer in (
            api.get("/runs/diary.1/workspace/results/private.txt"),
            api.get("/runs/diary.1/workspace/results"),
            api.get("/runs/diary.1/workspace"),
            api.get("/runs/diary.1/logs", params={"full": "true"}),
            api.put("/runs/diary.1/workspace/results/private.txt", content=b"defaced"),
            api.put("/runs/diary.1/workspace/new.txt", content=b"planted"),
        ):
            assert answer.status_code == 404 and "does not exist" in answer.json()["message"]
            assert PRIVATE not in answer.content
    assert victim_file.read_bytes() == PRIVATE and not (ws / "new.txt").exists()
    for args in (["fetch", "diary.1", "results"], ["ls", "diary.1"], ["logs", "diary.1", "--full"]):
        refused = site.server.cli(*args, account="mallory", check=False, cwd=tmp_path)
        assert refused.code == 2 and "does not exist" in refused.err, args
    assert json.loads(site.server.cli("ls", "diary.1", "--json", account="victim").out)["files"]
