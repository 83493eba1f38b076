"""Issue 14's read-rights and quota attacks over HTTP, against a real ``vre serve`` and
``vre worker``: alice's private file in her public dataset never reaches bob (no listing,
no URL, no run of his), and registrations or rules over a quota record nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.server import VREServer
from tests.integration.test_replication import start_worker, stop

SECRET = b"alice's private bytes"
SPEC = """\
version: 0.9.0
inputs:
  files: ['rucio(local, {did})']
workflow:
  type: serial
  specification:
    steps:
      - name: look
        environment: docker.io/library/bash:5
        commands:
          - mkdir -p results
          - find inputs > results/listing.txt
          - cat inputs/pub/open.dat
"""


@pytest.fixture(scope="module")
def lake(vre_server: VREServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """alice's public ``pub:ds`` holds ``pub:open.dat`` and her private
    ``user.alice:secret.dat``; a worker runs the runs."""
    disk = tmp_path_factory.mktemp("rights-disk")
    vre_server.add_account("alice", "alice-password")
    vre_server.add_account("bob", "bob-password")
    with vre_server.api() as root:
        for name, where in (("RIGHTS-DISK", disk), ("RIGHTS-OTHER", disk.parent / "rights-2")):
            root.post("/rses", json={"name": name, "prefix": where.as_uri()}).raise_for_status()
    with vre_server.api("alice") as alice:
        alice.post("/scopes", json={"name": "pub", "public": True}).raise_for_status()
        alice.post("/scopes", json={"name": "user.alice"}).raise_for_status()
        for did, data in (("pub/open.dat", b"open bytes\n"), ("user.alice/secret.dat", SECRET)):
            put = alice.put(f"/files/{did}", params={"rse": "RIGHTS-DISK"}, content=data)
            put.raise_for_status()
        alice.post("/dids", json={"scope": "pub", "name": "ds"}).raise_for_status()
        attached = alice.post(
            "/attachments/pub/ds", json={"dids": ["pub:open.dat", "user.alice:secret.dat"]}
        )
        attached.raise_for_status()
    process = start_worker(vre_server.home, VRE_RUN_POLL="0.05")
    try:
        yield disk
    finally:
        stop(process)


def test_bob_sees_nothing_of_alices_private_member(vre_server: VREServer, lake: Path) -> None:
    with vre_server.api("bob") as bob:
        for answer in (
            bob.get("/replicas/pub/ds"),
            bob.post("/replicas/list", json={"dids": ["pub:ds"]}),
            bob.get("/dids/pub/ds"),
            bob.get("/dids/pub", params={"recursive": True}),
            bob.get("/dids/pub", params={"pattern": "ds", "recursive": True, "type": "file"}),
        ):
            assert answer.status_code == 200, answer.text
            assert "secret" not in answer.text and "user.alice" not in answer.text
        (listed,) = bob.get("/replicas/pub/ds").json()
        assert listed["name"] == "open.dat" and listed["replicas"][0]["url"].startswith("file://")
        shown = bob.get("/dids/pub/ds").json()
        assert [c["name"] for c in shown["content"]] == ["open.dat"] and shown["length"] == 1
        for path in (
            "/files/user.alice/secret.dat",
            "/replicas/user.alice/secret.dat",
            "/meta/user.alice/secret.dat",
            "/dids/user.alice/secret.dat",
        ):
            refused = bob.get(path)
            assert refused.status_code == 403, (path, refused.text)
            assert refused.json()["error"] == "forbidden"
        rule = bob.post("/rules", json={"did": "pub:ds", "rse_expression": "RIGHTS-OTHER"})
        assert rule.status_code == 201, rule.text
        detail = bob.get(f"/rules/{rule.json()['id']}").json()
        assert [lock["name"] for lock in detail["locks"]] == ["open.dat"]
        assert "secret" not in bob.get("/transfers").text
        assert bob.delete(f"/rules/{rule.json()['id']}").status_code == 200
    with vre_server.api("alice") as alice:  # the owner still sees all of it
        names = sorted(f["name"] for f in alice.get("/replicas/pub/ds").json())
        assert names == ["open.dat", "secret.dat"]
        assert alice.get("/dids/pub/ds").json()["length"] == 2


def _run(vre_server: VREServer, tmp_path: Path, did: str, name: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    spec = tmp_path / name / "reana.yaml"
    spec.parent.mkdir()
    spec.write_text(SPEC.format(did=did))
    done = vre_server.cli("run", str(spec), "--name", name, "--watch", account="bob", check=False)
    state = json.loads(vre_server.cli("status", f"{name}.1", "--json", account="bob").out)
    return done.code, state, done.out + done.err


def test_bobs_run_cannot_stage_the_private_member(
    vre_server: VREServer, lake: Path, tmp_path: Path
) -> None:
    code, state, said = _run(vre_server, tmp_path, "pub, ds", "grab")
    assert code != 0 and state["status"] == "failed"
    shown = json.dumps(state) + said
    assert "1 file(s) that account 'bob' may not read" in shown
    assert "secret" not in shown and str(lake) not in shown
    workspace = vre_server.home / "workspaces/bob/grab.1"
    assert not any("secret" in p.name for p in workspace.rglob("*"))
    code, state, said = _run(vre_server, tmp_path, "pub, open.dat", "fine")  # by name: fine
    assert (code, state["status"]) == (0, "finished"), said
    listing = (vre_server.home / "workspaces/bob/fine.1/results/listing.txt").read_text()
    assert "inputs/pub/open.dat" in listing and "secret" not in listing


def test_registration_and_rules_over_quota_record_nothing(
    vre_server: VREServer, lake: Path
) -> None:
    with vre_server.api() as root:
        for account in ("alice", "bob"):
            quota = root.put(f"/quotas/{account}/RIGHTS-OTHER", json={"bytes": 10})
            quota.raise_for_status()
    big = {"scope": "user.alice", "name": "huge.dat", "bytes": 10**12, "adler32": "00000001"}
    with vre_server.api("alice") as alice:
        refused = alice.post("/replicas/bulk", json={"rse": "RIGHTS-OTHER", "files": [big]})
        assert refused.status_code == 413, refused.text
        body = refused.json()
        assert body["error"] == "quota_exceeded" and "limit 10 bytes" in body["message"]
        assert "RIGHTS-OTHER" in body["message"] and str(lake) not in body["message"]
        assert alice.get("/dids/user.alice/huge.dat").status_code == 404  # nothing recorded
        usage = {q["rse"]: q["used"] for q in alice.get("/quotas").json()}
        assert usage.get("RIGHTS-OTHER", 0) == 0
        small = [{**big, "name": f"s{i}.dat", "bytes": 4} for i in range(2)]
        fits = alice.post("/replicas/bulk", json={"rse": "RIGHTS-OTHER", "files": small})
        assert fits.status_code == 201 and fits.json()["replicas"] == 2, fits.text
        one_more = [{**big, "name": "s3.dat", "bytes": 4}]
        again = alice.post("/replicas/bulk", json={"rse": "RIGHTS-OTHER", "files": one_more})
        assert again.status_code == 413, again.text  # small batches add up
        usage = {q["rse"]: q["used"] for q in alice.get("/quotas").json()}
        assert usage["RIGHTS-OTHER"] == 8
    with vre_server.api("bob") as bob:
        before = bob.get("/rules").json()
        over = bob.post("/rules", json={"did": "pub:open.dat", "rse_expression": "RIGHTS-OTHER"})
        assert over.status_code == 413, over.text
        assert over.json()["error"] == "quota_exceeded"
        assert "quota exceeded on RIGHTS-OTHER" in over.json()["message"]
        assert bob.get("/rules").json() == before
