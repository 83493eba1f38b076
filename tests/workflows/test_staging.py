"""Stage-in from and stage-out to the local lake (real POSIX and XRootD storage)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.xrootd import XRootD
from vre.db import transaction
from vre.errors import Conflict, Forbidden, Invalid
from vre.identity.models import Account
from vre.lake import catalogue, meta, rses, scopes, upload
from vre.workflows import staging
from vre.workflows.spec import RucioInput, RucioOutput


@pytest.fixture
def lake(
    sessions: sessionmaker[Session],
    root: Account,
    alice: Account,
    tmp_path: Path,
    xrootd_server: XRootD,
) -> dict[str, bytes]:
    with transaction(sessions) as session:
        rses.add(session, root, "POSIX", (tmp_path / "posix").as_uri())
        rses.add(session, root, "XRD", f"{xrootd_server.url}/{tmp_path.name}")
        scopes.add(session, alice, "user.alice")
    data = {f"f{i}.dat": os.urandom(1000 + i) for i in range(3)}
    for name, payload in data.items():
        upload.upload(
            sessions, alice, "user.alice", name, "POSIX", [payload], dataset=("user.alice", "ds")
        )
    data["remote.dat"] = os.urandom(5000)
    upload.upload(
        sessions,
        alice,
        "user.alice",
        "remote.dat",
        "XRD",
        [data["remote.dat"]],
        dataset=("user.alice", "ds2"),
    )
    with transaction(sessions) as session:
        catalogue.add_collection(session, alice, "user.alice", "all", "container")
        catalogue.attach(
            session, alice, "user.alice", "all", [("user.alice", "ds"), ("user.alice", "ds2")]
        )
    return data


def test_stage_in_file_dataset_and_container(sessions, alice, lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ws = tmp_path / "ws"
    ws.mkdir()
    one = staging.stage_in(sessions, alice, ws, [RucioInput("local", "user.alice", "f0.dat")])
    assert [(s.path, s.linked) for s in one] == [("inputs/user.alice/f0.dat", True)]
    assert (ws / "inputs/user.alice/f0.dat").is_symlink()  # a file:// replica here: linked
    every = staging.stage_in(sessions, alice, ws, [RucioInput("local", "user.alice", "all")])
    assert sorted(s.path for s in every) == [f"inputs/user.alice/{n}" for n in sorted(lake)]
    remote = ws / "inputs/user.alice/remote.dat"
    assert not remote.is_symlink() and remote.read_bytes() == lake["remote.dat"]  # copied
    for name, payload in lake.items():
        assert (ws / "inputs/user.alice" / name).read_bytes() == payload
    staging.stage_in(sessions, alice, ws, [RucioInput("local", "user.alice", "ds")])


def test_corrupted_remote_replica_is_refused(
    sessions,
    alice,
    lake,
    tmp_path,  # type: ignore[no-untyped-def]
    xrootd_server,
) -> None:
    (stored,) = xrootd_server.local(tmp_path.name).rglob("remote.dat")
    stored.write_bytes(b"garbage" + lake["remote.dat"][7:])
    ws = tmp_path / "ws"
    ws.mkdir()
    with pytest.raises(Invalid, match=r"could not stage in .*checksum mismatch on XRD"):
        staging.stage_in(sessions, alice, ws, [RucioInput("local", "user.alice", "remote.dat")])
    assert not (ws / "inputs/user.alice/remote.dat").exists()
    assert not [p.name for p in ws.rglob("*") if p.is_file()]  # no part file left either


def test_stage_in_replaces_what_a_step_left_there(sessions, alice, lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ws, outside = tmp_path / "ws", tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    (ws / "inputs/user.alice").mkdir(parents=True)
    (ws / "inputs/user.alice/remote.dat").symlink_to(outside)  # planted by a step
    (ws / "inputs/user.alice/f0.dat").mkdir()
    (ws / "inputs/user.alice/f0.dat/junk").write_bytes(b"x")
    wanted = [RucioInput("local", "user.alice", n) for n in ("remote.dat", "f0.dat")]
    staging.stage_in(sessions, alice, ws, wanted)
    remote = ws / "inputs/user.alice/remote.dat"
    assert not remote.is_symlink() and remote.read_bytes() == lake["remote.dat"]
    assert outside.read_bytes() == b"not yours"  # replaced, never written through
    assert (ws / "inputs/user.alice/f0.dat").is_symlink()


def test_unknown_instance_and_other_accounts(sessions, alice, bob, lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ws = tmp_path / "ws"
    ws.mkdir()
    with pytest.raises(Invalid, match="not configured"):
        staging.stage_in(sessions, alice, ws, [RucioInput("cern", "user.alice", "ds")])
    with pytest.raises(Forbidden):
        staging.stage_in(sessions, bob, ws, [RucioInput("local", "user.alice", "ds")])
    assert not (ws / "inputs").exists()


def test_stage_out_records_provenance(sessions, alice, lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ws = tmp_path / "ws"
    (ws / "results").mkdir(parents=True)
    staged = staging.stage_in(sessions, alice, ws, [RucioInput("local", "user.alice", "ds")])
    (ws / "results/summary.json").write_text('{"limit": 1.5}')
    prov = staging.provenance("fit.3", "ab" * 32, staged)
    done = staging.stage_out(
        sessions,
        alice,
        ws,
        [RucioOutput("local", "user.alice", "results/summary.json", "XRD", "fits")],
        prov,
        "fit.3",
    )
    assert done[0]["did"] == "user.alice:fit.3/results/summary.json"
    with transaction(sessions) as session:
        did = catalogue.get(session, "user.alice", "fit.3/results/summary.json")
        values = meta.get_all(session, did.id)
        content = [
            c.name
            for c in catalogue.contents(session, catalogue.get(session, "user.alice", "fits"))
        ]
    assert values["vre_run"] == "fit.3" and values["vre_spec_digest"] == "ab" * 32
    inputs = json.loads(values["vre_inputs"])
    assert sorted(i["did"] for i in inputs) == [f"user.alice:f{i}.dat" for i in range(3)]
    assert all(len(i["adler32"]) == 8 for i in inputs)
    assert content == ["fit.3/results/summary.json"]
    out = [RucioOutput("local", "user.alice", "results/summary.json", "XRD", "fits")]
    again = staging.stage_out(sessions, alice, ws, out, prov, "fit.3")  # a restart, same bytes
    assert again[0]["adler32"] == done[0]["adler32"]
    (ws / "results/summary.json").write_text('{"limit": 2.5}')  # a restart, new bytes
    with pytest.raises(Conflict, match=r"earlier attempt of run fit\.3.*start a new run"):
        staging.stage_out(sessions, alice, ws, out, prov, "fit.3")
    with pytest.raises(Invalid, match="not produced"):
        staging.stage_out(
            sessions,
            alice,
            ws,
            [RucioOutput("local", "user.alice", "results/none.json", "XRD", None)],
            prov,
            "fit.3",
        )
