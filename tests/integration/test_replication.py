"""Replication end to end: CLI → server → ``vre worker`` subprocesses → storage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import drop_postgres_database, postgres_database
from tests.fixtures.server import ROOT_PASSWORD, VRE, VREServer, start_server, stop_server
from tests.fixtures.xrootd import XRootD


def start_worker(
    home: Path,
    *args: str,
    database_url: str | None = None,
    log: Path | None = None,
    **settings: str,
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VRE_")}
    env.update(VRE_HOME=str(home), VRE_WORKER_INTERVAL="0.3", **settings)
    if database_url:
        env["VRE_DATABASE_URL"] = database_url
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (lives with the process)
    return subprocess.Popen([VRE, "worker", *args], env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def rule(server: VREServer, rule_id: int, account: str = "root") -> dict:
    return json.loads(server.cli("rule", "show", str(rule_id), "--json", account=account).out)


@pytest.fixture(scope="module")
def lake(
    vre_server: VREServer, xrootd_server: XRootD, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Path]]:
    dirs = {"A": tmp_path_factory.mktemp("rep-a"), "B": tmp_path_factory.mktemp("rep-b")}
    cli = vre_server.cli
    cli("rse", "add", "REP-A", dirs["A"].as_uri(), "--attr", "site=ONE", "--attr", "type=disk")
    cli("rse", "add", "REP-B", dirs["B"].as_uri(), "--attr", "site=TWO", "--attr", "type=disk")
    cli(
        "rse",
        "add",
        "REP-X",
        f"{xrootd_server.url}/rep",
        "--attr",
        "site=TWO",
        "--attr",
        "type=disk",
    )
    vre_server.add_account("carol", "carol-password")
    vre_server.add_account("dave", "dave-password")
    cli("scope", "add", "user.carol", "--account", "carol")
    worker = start_worker(
        vre_server.home, "--reaper-grace", "0", log=vre_server.home.parent / "worker.log"
    )
    try:
        yield dirs
    finally:
        stop(worker)


def test_rule_flow_through_the_cli(
    vre_server: VREServer, lake: dict[str, Path], tmp_path: Path
) -> None:
    cli = vre_server.cli
    files = []
    for i in range(5):
        path = tmp_path / f"ev{i}.root"
        path.write_bytes(os.urandom(40_000 + i))
        files.append(str(path))
    cli(
        "upload",
        *files,
        "--scope",
        "user.carol",
        "--rse",
        "REP-A",
        "--dataset",
        "evts",
        account="carol",
    )
    created = json.loads(
        cli(
            "rule",
            "add",
            "user.carol:evts",
            "--rse",
            "site=TWO",
            "--copies",
            "2",
            "--json",
            account="carol",
        ).out
    )
    wait_for(lambda: rule(vre_server, created["id"], "carol")["state"] == "ok", what="rule ok")
    shown = rule(vre_server, created["id"], "carol")
    assert shown["locks_ok"] == 10
    assert {lock["rse"] for lock in shown["locks"]} == {"REP-B", "REP-X"}
    listed = json.loads(
        cli("rule", "list", "--did", "user.carol:evts", "--json", account="carol").out
    )
    assert [r["id"] for r in listed] == [created["id"]]
    moved = json.loads(cli("transfers", "--state", "done", "--json", account="carol").out)
    assert len(moved) == 10 and all(t["rate_mb_s"] for t in moved)
    table = cli("transfers", "--rse", "REP-X", account="carol").out
    assert "done" in table
    out = tmp_path / "back"
    cli("download", "user.carol:evts", "--dir", str(out), account="carol")
    assert sorted(p.name for p in (out / "user.carol").iterdir()) == sorted(
        Path(f).name for f in files
    )
    # Another account can neither see nor delete carol's rule, nor see her transfers.
    assert json.loads(cli("transfers", "--json", account="dave").out) == []
    assert json.loads(cli("rule", "list", "--json", account="dave").out) == []
    denied = cli("rule", "delete", str(created["id"]), account="dave", check=False)
    assert denied.code == 2 and "does not exist" in denied.err
    # Delete the rule: the copies lose their locks and the reaper (grace 0) removes them.
    cli("rule", "delete", str(created["id"]), account="carol")
    wait_for(lambda: not list(lake["B"].rglob("ev*.root")), what="reaper on REP-B")
    assert len(list(lake["A"].rglob("ev*.root"))) == 5  # the uploads' own rules keep them


def test_quota_and_lifetime_through_the_cli(
    vre_server: VREServer, lake: dict[str, Path], tmp_path: Path
) -> None:
    cli = vre_server.cli
    path = tmp_path / "big.dat"
    path.write_bytes(os.urandom(3000))
    cli("upload", str(path), "--scope", "user.carol", "--rse", "REP-A", account="carol")
    cli("quota", "set", "carol", "REP-B", "2000")
    refused = cli(
        "rule", "add", "user.carol:big.dat", "--rse", "REP-B", account="carol", check=False
    )
    assert refused.code == 2
    assert "REP-B" in refused.err and "2000" in refused.err and "used" in refused.err
    shown = json.loads(cli("quota", "show", "--json", account="carol").out)
    assert {"rse": "REP-B", "limit": 2000}.items() <= next(
        q for q in shown if q["rse"] == "REP-B"
    ).items()
    cli("quota", "set", "carol", "REP-B", "100000")
    created = json.loads(
        cli(
            "rule",
            "add",
            "user.carol:big.dat",
            "--rse",
            "REP-B",
            "--lifetime",
            "3",
            "--json",
            account="carol",
        ).out
    )
    wait_for(lambda: list(lake["B"].rglob("big.dat")), what="copy on REP-B")
    wait_for(lambda: not list(lake["B"].rglob("big.dat")), timeout=30, what="expiry + reaper")
    gone = cli("rule", "show", str(created["id"]), account="carol", check=False)
    assert gone.code == 2
    usage = json.loads(cli("quota", "show", "--json", account="carol").out)
    assert next(q for q in usage if q["rse"] == "REP-B")["used"] == 0


def test_reaper_dry_run_erase_and_metrics(
    vre_server: VREServer, lake: dict[str, Path], tmp_path: Path
) -> None:
    cli = vre_server.cli
    path = tmp_path / "doomed.dat"
    path.write_bytes(b"doomed")
    cli("upload", str(path), "--scope", "user.carol", "--rse", "REP-A", account="carol")
    refused = cli("erase", "user.carol:doomed.dat", account="carol", check=False)
    assert refused.code == 2 and "--force" in refused.err
    denied = cli("erase", "user.carol:doomed.dat", "--force", account="dave", check=False)
    assert denied.code == 2
    assert "reaper" in cli("erase", "user.carol:doomed.dat", "--force", account="carol").out
    wait_for(lambda: not list(lake["A"].rglob("doomed.dat")), what="reaper after erase")
    assert cli("reaper", "--dry-run").out.strip().endswith("would delete 0 replica(s)")
    assert cli("reaper", "--dry-run", account="carol", check=False).code == 2  # admin only
    with vre_server.api() as api:
        text = api.get(vre_server.url + "/metrics").text
        assert (
            api.get(
                vre_server.url + "/metrics",
                headers={"Authorization": "Bearer " + vre_server.tokens["carol"]},
            ).status_code
            == 403
        )
    assert 'vre_transfers{state="done"}' in text
    assert "vre_transfer_bytes_total" in text and "vre_transfer_duration_seconds_bucket" in text
    assert 'vre_rules{state="ok"}' in text and "vre_transfer_failures_total" in text


def test_worker_killed_mid_transfer_then_restarted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    process, url = start_server(home)
    token = httpx.post(
        f"{url}/api/v1/auth/login", json={"account": "root", "password": ROOT_PASSWORD}
    ).json()["token"]
    server = VREServer(url=url, home=home, tokens={"root": token})
    src, dst = tmp_path / "src", tmp_path / "dst"
    try:
        server.cli("rse", "add", "KILL-SRC", src.as_uri())
        server.cli("rse", "add", "KILL-DST", dst.as_uri())
        server.cli("scope", "add", "crash")
        big = tmp_path / "big.bin"
        with open(big, "wb") as handle:
            for _ in range(96):
                handle.write(os.urandom(4 * 1024 * 1024))
        server.cli("upload", str(big), "--scope", "crash", "--rse", "KILL-SRC")
        created = json.loads(
            server.cli("rule", "add", "crash:big.bin", "--rse", "KILL-DST", "--json").out
        )
        worker = start_worker(home, VRE_TRANSFER_LEASE="3")
        part = wait_for(lambda: list(dst.rglob("*.vre-part-*")), timeout=60, what="part file")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        reps = json.loads(server.cli("replicas", "crash:big.bin", "--json").out)[0]["replicas"]
        assert {r["rse"]: r["state"] for r in reps}["KILL-DST"] == "copying"
        assert rule(server, created["id"])["state"] == "replicating"
        assert part[0].exists() and not list(dst.rglob("big.bin"))  # never under its real name
        worker = start_worker(home, VRE_TRANSFER_LEASE="3")
        try:
            wait_for(
                lambda: rule(server, created["id"])["state"] == "ok",
                timeout=90,
                what="rule ok after restart",
            )
        finally:
            stop(worker)
        (copy,) = dst.rglob("big.bin")
        assert copy.read_bytes() == big.read_bytes()
        assert not list(dst.rglob("*.vre-part-*"))  # the dead worker's part file is gone too
        transfer = json.loads(server.cli("transfers", "--json").out)[0]
        assert transfer["state"] == "done"
    finally:
        stop_server(process)


def test_two_workers_on_postgresql_share_the_queue(tmp_path: Path) -> None:
    database_url, name = postgres_database()
    home = tmp_path / "home"
    home.mkdir()
    process, url = start_server(home, database_url=database_url)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        token = httpx.post(
            f"{url}/api/v1/auth/login", json={"account": "root", "password": ROOT_PASSWORD}
        ).json()["token"]
        server = VREServer(url=url, home=home, tokens={"root": token})
        src, dst = tmp_path / "src", tmp_path / "dst"
        server.cli("rse", "add", "PG-SRC", src.as_uri())
        server.cli("rse", "add", "PG-DST", dst.as_uri())
        server.cli("scope", "add", "pg")
        inputs = tmp_path / "in"
        inputs.mkdir()
        for i in range(120):
            (inputs / f"f{i:03d}").write_bytes(os.urandom(64 * 1024))
        server.cli(
            "upload",
            *map(str, sorted(inputs.iterdir())),
            "--scope",
            "pg",
            "--rse",
            "PG-SRC",
            "--dataset",
            "many",
        )
        logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
        workers = [
            start_worker(
                home,
                "--verbose",
                database_url=database_url,
                log=log,
                VRE_TRANSFER_BATCH="4",
                VRE_TRANSFER_THREADS="2",
            )
            for log in logs
        ]
        for log in logs:  # both poll the queue before there is work
            wait_for(
                lambda log=log: log.exists() and " started" in log.read_text(),
                what="worker started",
            )
        created = json.loads(server.cli("rule", "add", "pg:many", "--rse", "PG-DST", "--json").out)
        try:
            wait_for(
                lambda: rule(server, created["id"])["state"] == "ok",
                timeout=60,
                what="rule ok with two workers",
            )
        except AssertionError:
            shown = rule(server, created["id"])
            shown["locks"] = [lk for lk in shown["locks"] if lk["state"] != "ok"][:5]
            raise AssertionError(f"rule not ok: {shown}") from None
        for worker in workers:
            stop(worker)
        claimed = []
        for log in logs:
            ids: list[str] = []
            for line in log.read_text().splitlines():
                if "claimed transfers" in line:
                    ids += line.rsplit(" ", 1)[1].split(",")
            claimed.append(ids)
        assert all(claimed), "both workers took part"
        assert not set(claimed[0]) & set(claimed[1]), "a transfer was claimed twice"
        assert len(claimed[0]) + len(claimed[1]) == 120
        done = json.loads(server.cli("transfers", "--state", "done", "--json").out)
        assert len(done) == 120 and all(t["attempts"] == 1 for t in done)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        stop_server(process)
        drop_postgres_database(name)
