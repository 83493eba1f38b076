"""External Rucio instances: the operator's configuration, and stage-in/out through Rucio's
own client against a real Rucio 41.5.1 server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.fixtures.rucio import RucioServer
from tests.workflows.test_runs import execute_next, state
from vre.config import Settings
from vre.db import transaction
from vre.errors import Invalid, StorageError
from vre.workflows import instances, runs, staging
from vre.workflows.spec import RucioInput, RucioOutput


def configured(tmp_path: Path, text: str, name: str = "rucio-instances.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_configuration_is_checked_with_messages_that_name_the_place(tmp_path: Path) -> None:
    assert instances.load(tmp_path / "absent.toml") == {}
    good = configured(
        tmp_path,
        '[atlas]\nrucio_host = "https://r.example"\naccount = "svc"\n'
        'username = "svc"\npassword = "pw"\n',
    )
    (atlas,) = instances.load(good).values()
    assert atlas.auth_host == "https://r.example" and atlas.auth_type == "userpass"
    assert "password = pw" in atlas.client_config(tmp_path)
    for text, message in [
        ("[x]\nrucio_host = 1\n", r"\[x\]: account required"),
        ('[x]\nrucio_host = "h"\naccount = "a"\n', "userpass needs username, password"),
        ('[x]\nrucio_host = "h"\naccount = "a"\nauth_type = "x509"\n', "x509 needs client_cert"),
        ('[x]\nrucio_host = "h"\naccount = "a"\nauth_type = "gss"\n', "auth_type must be"),
        ('[x]\nrucio_host = "h"\naccount = "a"\nhost = "typo"\n', "unknown setting.*host"),
        ('[local]\nrucio_host = "h"\naccount = "a"\n', "cannot be redefined"),
        ("not toml = = =\n", "not a valid TOML file"),
    ]:
        with pytest.raises(Invalid, match=message):
            instances.load(configured(tmp_path, text, "bad.toml"))
    with pytest.raises(Invalid, match=r"'cms' is not configured \(known: local, atlas"):
        instances.get(good, "cms")


def test_stage_in_from_an_external_rucio_instance(  # type: ignore[no-untyped-def]
    sessions, alice, tmp_path, rucio_server: RucioServer
) -> None:
    config = configured(tmp_path, rucio_server.instance("ext"))
    ws = tmp_path / "ws"
    ws.mkdir()
    wanted = [RucioInput("ext", "ext", "events"), RucioInput("ext", "ext", "single.dat")]
    staged = staging.stage_in(sessions, alice, ws, wanted, configured=config)
    assert sorted(s.path for s in staged) == [
        "inputs/ext/ev0.dat",
        "inputs/ext/ev1.dat",
        "inputs/ext/ev2.dat",
        "inputs/ext/single.dat",
    ]
    for name, payload in rucio_server.files.items():
        assert (ws / "inputs/ext" / name).read_bytes() == payload
    assert all(s.instance == "ext" and len(s.adler32 or "") == 8 for s in staged)
    again = staging.describe(sessions, alice, wanted, configured=config)  # a restart
    assert [(s.did, s.adler32) for s in again] == [(s.did, s.adler32) for s in staged]
    record = json.loads(staging.provenance("fit.1", "ab" * 32, staged)["vre_inputs"])
    assert {"did": "ext:single.dat", "adler32": staged[-1].adler32, "instance": "ext"} in record


def test_links_a_step_planted_in_inputs_are_never_followed(  # type: ignore[no-untyped-def]
    sessions, alice, tmp_path, rucio_server: RucioServer
) -> None:
    config = configured(tmp_path, rucio_server.instance("ext"))
    elsewhere = tmp_path / "someone-elses"
    elsewhere.mkdir()
    (elsewhere / "single.dat").write_text("not yours to overwrite")
    ws = tmp_path / "ws"
    (ws / "inputs").mkdir(parents=True)
    (ws / "inputs/ext").symlink_to(elsewhere)  # the scope directory leads out
    wanted = [RucioInput("ext", "ext", "single.dat")]
    with pytest.raises(Invalid, match="outside the workspace"):
        staging.stage_in(sessions, alice, ws, wanted, configured=config)
    (ws / "inputs/ext").unlink()
    (ws / "inputs/ext").mkdir()
    (ws / "inputs/ext/single.dat").symlink_to(elsewhere / "single.dat")  # the file leads out
    staging.stage_in(sessions, alice, ws, wanted, configured=config)
    assert (elsewhere / "single.dat").read_text() == "not yours to overwrite"
    staged = ws / "inputs/ext/single.dat"
    assert not staged.is_symlink() and staged.read_bytes() == rucio_server.files["single.dat"]
    assert not list(ws.parent.glob(".vre-stage-*"))  # the holding directory is gone


def test_external_failures_are_one_clear_line(  # type: ignore[no-untyped-def]
    sessions, alice, tmp_path, rucio_server: RucioServer
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    config = configured(tmp_path, rucio_server.instance("ext"))
    with pytest.raises(StorageError, match="Rucio instance 'ext': DataIdentifierNotFound"):
        staging.stage_in(
            sessions, alice, ws, [RucioInput("ext", "ext", "nothing")], configured=config
        )
    wrong = configured(
        tmp_path, rucio_server.instance("ext").replace("rucio-root-secret", "bad"), "wrong.toml"
    )
    with pytest.raises(StorageError, match="Rucio instance 'ext': CannotAuthenticate"):
        staging.stage_in(
            sessions, alice, ws, [RucioInput("ext", "ext", "events")], configured=wrong
        )
    assert not list((ws / "inputs").rglob("*.dat"))


def test_stage_out_to_an_external_rucio_instance_with_provenance(  # type: ignore[no-untyped-def]
    sessions, alice, bob, tmp_path, rucio_server: RucioServer
) -> None:
    config = configured(tmp_path, rucio_server.instance("ext"))
    ws = tmp_path / "ws"
    (ws / "results").mkdir(parents=True)
    (ws / "results/summary.json").write_text('{"limit": 0.74}')
    label = f"fit-{uuid.uuid4().hex[:8]}.7"  # both databases' runs publish to one server
    prov = {"vre_run": label, "vre_spec_digest": "cd" * 32, "vre_inputs": "[]"}
    out = RucioOutput("ext", "ext", "results/summary.json", "EXT-DISK", "fit-results")
    (done,) = staging.stage_out(sessions, alice, ws, [out], prov, label, configured=config)
    name = f"alice.{label}.results.summary.json"
    assert done["did"] == f"ext:{name}" and done["instance"] == "ext"
    again = staging.stage_out(sessions, alice, ws, [out], prov, label, configured=config)
    assert again == [done]  # a restart publishing the same bytes
    (ws / "results/summary.json").write_text('{"limit": 0.99}')
    with pytest.raises(StorageError, match=r"exists with other content.*start a new run"):
        staging.stage_out(sessions, alice, ws, [out], prov, label, configured=config)
    seen = json.loads(
        rucio_server.python(
            "import json; from rucio.client import Client; c = Client()\n"
            f"m = c.get_metadata('ext', '{name}', plugin='ALL')\n"
            "files = [f['name'] for f in c.list_files('ext', 'fit-results')]\n"
            "print(json.dumps({'meta': {k: m[k] for k in ('vre_run', 'vre_spec_digest',"
            " 'adler32')}, 'files': files}))"
        )
    )
    assert seen["meta"] == {
        "vre_run": label,
        "vre_spec_digest": "cd" * 32,
        "adler32": done["adler32"],
    }
    assert name in seen["files"]
    (bobs,) = staging.stage_out(sessions, bob, ws, [out], prov, label, configured=config)
    assert bobs["did"] == f"ext:bob.{label}.results.summary.json"  # same label, no clash
    other = f"fit-{uuid.uuid4().hex[:8]}.1"
    (ws / "other.txt").write_text("made outside the VRE")
    rucio_server.python(  # a name the VRE would use, made by someone else beforehand
        "from rucio.client import Client; from rucio.client.uploadclient import UploadClient\n"
        f"UploadClient(Client()).upload([{{'path': '{ws / 'other.txt'}', 'rse': 'EXT-DISK',"
        f" 'did_scope': 'ext', 'did_name': 'alice.{other}.results.summary.json',"
        " 'register_after_upload': True}])"
    )
    with pytest.raises(StorageError, match="exists and was not published by this run"):
        staging.stage_out(sessions, alice, ws, [out], prov, other, configured=config)
    missing_rse = RucioOutput("ext", "ext", "results/summary.json", None, None)
    with pytest.raises(Invalid, match="needs rse=NAME"):
        staging.stage_out(sessions, alice, ws, [missing_rse], prov, "fit.8", configured=config)


RUN_SPEC = """
version: 0.9.0
inputs:
  files:
    - rucio(ext, ext, events)
workflow:
  type: serial
  specification:
    steps:
      - name: count
        environment: docker.io/library/bash:5
        commands:
          - mkdir -p results && cat inputs/ext/ev*.dat | wc -c > results/bytes.txt
outputs:
  files:
    - rucio(ext, ext, results/bytes.txt, rse=EXT-DISK, dataset=counts)
"""


def test_a_run_stages_in_from_and_out_to_an_external_instance(  # type: ignore[no-untyped-def]
    sessions, alice, tmp_path, rucio_server: RucioServer
) -> None:
    config = configured(tmp_path, rucio_server.instance("ext"))
    settings = Settings(home=tmp_path / "home", step_timeout=30, rucio_instances=config)
    with transaction(sessions) as session:
        label = runs.create(session, alice, "count", RUN_SPEC, settings.home).label
        with pytest.raises(Invalid, match=r"instance\(s\) ext not configured"):
            runs.start(session, alice, label, instances={"local"})
    with transaction(sessions) as session:
        runs.start(session, alice, label, instances={"local", "ext"})
    execute_next(sessions, settings)
    run = state(sessions, alice, label)
    assert run.status == "finished", run.error
    expected = sum(len(rucio_server.files[n]) for n in rucio_server.dataset)
    published = rucio_server.python(
        "import json; from rucio.client import Client; c = Client()\n"
        f"m = c.get_metadata('ext', 'alice.{label}.results.bytes.txt', plugin='ALL')\n"
        "print(json.dumps({k: m[k] for k in ('vre_run', 'vre_inputs', 'bytes')}))"
    )
    meta = json.loads(published)
    assert meta["vre_run"] == label and meta["bytes"] == len(f"{expected}\n")
    inputs = json.loads(meta["vre_inputs"])
    assert sorted(i["did"] for i in inputs) == [f"ext:{n}" for n in rucio_server.dataset]
    assert {i["instance"] for i in inputs} == {"ext"}
