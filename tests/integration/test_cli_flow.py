"""The whole CLI flow against a real ``vre serve``, with file:// and root:// RSEs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.fixtures.server import VREServer
from tests.fixtures.xrootd import XRootD


@pytest.fixture(scope="module")
def lake(
    vre_server: VREServer, xrootd_server: XRootD, tmp_path_factory: pytest.TempPathFactory
) -> VREServer:
    """Two RSEs (POSIX and XRootD), alice with a private scope, bob with nothing."""
    disk = tmp_path_factory.mktemp("disk")
    vre_server.cli(
        "rse",
        "add",
        "CERN-DISK",
        disk.as_uri(),
        "--attr",
        "site=CERN",
        "--attr",
        "type=disk",
        "--attr",
        "tier=0",
    )
    vre_server.cli(
        "rse",
        "add",
        "XRD-DISK",
        f"{xrootd_server.url}/flow",
        "--attr",
        "site=DESY",
        "--attr",
        "type=disk",
        "--attr",
        "tier=1",
    )
    vre_server.cli("account", "add", "alice", "--password", "alice-password")
    vre_server.cli("account", "add", "bob", "--password", "bob-password")
    for name in ("alice", "bob"):
        vre_server.add_account_token(name, f"{name}-password")
    vre_server.cli("scope", "add", "user.alice", "--account", "alice")
    return vre_server


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_login_whoami_and_tokens(lake: VREServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VRE_")}
    env["HOME"] = str(tmp_path)
    import subprocess

    from tests.fixtures.server import VRE

    done = subprocess.run(
        [VRE, "login", lake.url, "--account", "alice", "--password", "alice-password"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    config = tmp_path / ".config" / "vre" / "config.json"
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    who = subprocess.run([VRE, "whoami", "--json"], env=env, capture_output=True, text=True)
    assert json.loads(who.stdout)["name"] == "alice"
    wrong = subprocess.run(
        [VRE, "login", lake.url, "--account", "alice", "--password", "nope"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 2
    assert "wrong account name or password" in wrong.stderr
    created = json.loads(lake.cli("token", "create", "--json", account="alice").out)
    assert set(created) >= {"token", "expires_at"}
    listed = json.loads(lake.cli("token", "list", "--json", account="alice").out)
    assert created["id"] in [t["id"] for t in listed]
    assert created["token"] not in json.dumps(listed)
    lake.cli("token", "revoke", str(created["id"]), account="alice")
    lake.tokens["alice-revoked"] = created["token"]
    denied = lake.cli("whoami", account="alice-revoked", check=False)
    assert denied.code == 2 and "revoked" in denied.err


def test_upload_list_show_download(lake: VREServer, tmp_path: Path) -> None:
    files = [write(tmp_path / f"in/run{i}.dat", os.urandom(100_000 + i)) for i in range(3)]
    out = lake.cli(
        "upload",
        *map(str, files),
        "--scope",
        "user.alice",
        "--rse",
        "CERN-DISK",
        "--dataset",
        "flow-ds",
        "--meta",
        "run=7",
        "--meta",
        "kind=mc",
        "--json",
        account="alice",
    ).out
    uploaded = json.loads(out)
    assert [u["created"] for u in uploaded] == [True, True, True]
    xrd = write(tmp_path / "in/xrd.dat", os.urandom(50_000))
    lake.cli(
        "upload",
        str(xrd),
        "--scope",
        "user.alice",
        "--rse",
        "XRD-DISK",
        "--dataset",
        "flow-ds",
        account="alice",
    )
    listed = json.loads(
        lake.cli("ls", "user.alice:*", "--type", "file", "--json", account="alice").out
    )
    assert sorted(d["name"] for d in listed) == ["run0.dat", "run1.dat", "run2.dat", "xrd.dat"]
    filtered = json.loads(
        lake.cli(
            "ls", "user.alice:run*", "--filter", "run>=7,kind=mc", "--json", account="alice"
        ).out
    )
    assert len(filtered) == 3
    shown = json.loads(lake.cli("show", "user.alice:flow-ds", "--json", account="alice").out)
    assert shown["type"] == "dataset" and len(shown["content"]) == 4
    reps = json.loads(lake.cli("replicas", "user.alice:flow-ds", "--json", account="alice").out)
    urls = {r["name"]: r["replicas"][0]["url"] for r in reps}
    assert urls["xrd.dat"].startswith("root://")
    assert urls["run0.dat"].startswith("file://")
    for mode in ([], ["--through-api"]):
        target = tmp_path / ("dl" + "".join(mode))
        lake.cli("download", "user.alice:flow-ds", "--dir", str(target), *mode, account="alice")
        for source in [*files, xrd]:
            assert (target / "user.alice" / source.name).read_bytes() == source.read_bytes()
    table = lake.cli("replicas", "user.alice:flow-ds", account="alice").out
    assert "XRD-DISK" in table and "available" in table


def test_collections_attach_detach_meta(lake: VREServer) -> None:
    cli = lake.cli
    cli("dataset", "add", "user.alice:empty-ds", account="alice")
    cli("container", "add", "user.alice:top", account="alice")
    cli("container", "add", "user.alice:middle", account="alice")
    cli("attach", "user.alice:top", "user.alice:middle", account="alice")
    cli("attach", "user.alice:middle", "user.alice:empty-ds", account="alice")
    cycle = cli("attach", "user.alice:middle", "user.alice:top", account="alice", check=False)
    assert cycle.code == 2 and "cycle" in cycle.err
    cli("detach", "user.alice:middle", "user.alice:empty-ds", account="alice")
    shown = json.loads(cli("show", "user.alice:middle", "--json", account="alice").out)
    assert shown["content"] == []
    cli("meta", "set", "user.alice:top", "energy=13.6", "campaign=run3", account="alice")
    meta = json.loads(cli("meta", "get", "user.alice:top", "--json", account="alice").out)
    assert meta == {"campaign": "run3", "energy": 13.6}
    cli("meta", "unset", "user.alice:top", "campaign", account="alice")
    meta = json.loads(cli("meta", "get", "user.alice:top", "--json", account="alice").out)
    assert meta == {"energy": 13.6}


def test_rse_commands(lake: VREServer) -> None:
    assert lake.cli("rse", "resolve", "type=disk\\site=CERN").out.split() == ["XRD-DISK"]
    assert lake.cli("rse", "resolve", "tier<1|site=DESY").out.split() == ["CERN-DISK", "XRD-DISK"]
    shown = json.loads(lake.cli("rse", "show", "XRD-DISK", "--json").out)
    assert shown["attributes"]["site"] == "DESY"
    names = [r["name"] for r in json.loads(lake.cli("rse", "list", "--json").out)]
    assert {"CERN-DISK", "XRD-DISK"} <= set(names)
    bad = lake.cli("rse", "resolve", "site=CERN&(type=disk", check=False)
    assert bad.code == 2 and "position" in bad.err and len(bad.err.strip().splitlines()) == 1
    denied = lake.cli("rse", "add", "BOB-DISK", "file:///tmp/bob", account="bob", check=False)
    assert denied.code == 2 and "admin" in denied.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scope", "add", "bad scope!"], "invalid scope name"),
        (["ls", "nosuchscope:*"], "does not exist"),
        (["dataset", "add", "user.alice:../up"], "invalid DID name"),
        (["dataset", "add", "missing-colon"], "expected SCOPE:NAME"),
        (["ls", "user.alice:*", "--filter", "run>>3"], "invalid metadata filter"),
        (["meta", "set", "user.alice:top", f"big={'x' * 5000}"], "too large"),
        (["download", "user.alice:nothing-here"], "does not exist"),
        (
            ["upload", "/nonexistent/file", "--scope", "user.alice", "--rse", "CERN-DISK"],
            "no such file",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(lake: VREServer, args: list[str], message: str) -> None:
    result = lake.cli(*args, account="alice", check=False)
    assert result.code == 2, result
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert "Traceback" not in result.err


def test_duplicate_upload_with_other_content_is_refused(lake: VREServer, tmp_path: Path) -> None:
    first = write(tmp_path / "a/same.dat", b"first content")
    lake.cli("upload", str(first), "--scope", "user.alice", "--rse", "CERN-DISK", account="alice")
    again = lake.cli(
        "upload", str(first), "--scope", "user.alice", "--rse", "CERN-DISK", account="alice"
    )
    assert "already there" in again.out
    other = write(tmp_path / "b/same.dat", b"other content")
    refused = lake.cli(
        "upload",
        str(other),
        "--scope",
        "user.alice",
        "--rse",
        "CERN-DISK",
        account="alice",
        check=False,
    )
    assert refused.code == 2 and "other content" in refused.err
    target = tmp_path / "dl"
    lake.cli("download", "user.alice:same.dat", "--dir", str(target), account="alice")
    assert (target / "user.alice/same.dat").read_bytes() == b"first content"


def test_another_account_cannot_touch_a_private_scope(lake: VREServer, tmp_path: Path) -> None:
    data = write(tmp_path / "secret.dat", b"alice only")
    lake.cli(
        "upload",
        str(data),
        "--scope",
        "user.alice",
        "--rse",
        "CERN-DISK",
        "--meta",
        "secret=yes",
        account="alice",
    )
    attempts = [
        ["ls", "user.alice:*"],
        ["show", "user.alice:secret.dat"],
        ["meta", "get", "user.alice:secret.dat"],
        ["replicas", "user.alice:secret.dat"],
        ["download", "user.alice:secret.dat", "--dir", str(tmp_path / "bob")],
        ["upload", str(data), "--scope", "user.alice", "--rse", "CERN-DISK"],
        ["dataset", "add", "user.alice:bobs"],
        ["meta", "set", "user.alice:secret.dat", "secret=no"],
    ]
    for args in attempts:
        result = lake.cli(*args, account="bob", check=False)
        assert result.code == 2, args
        assert "user.alice" in result.err, (args, result.err)
    assert not (tmp_path / "bob").exists() or not any((tmp_path / "bob").rglob("*.dat"))
    with lake.api("bob") as api:
        answer = api.get("/files/user.alice/secret.dat")
        assert answer.status_code == 403
        assert answer.json()["error"] == "forbidden"
        assert "alice only" not in answer.text


def test_corrupted_replica_fails_download_and_leaves_nothing(
    lake: VREServer, tmp_path: Path
) -> None:
    data = write(tmp_path / "fragile.dat", os.urandom(20_000))
    lake.cli("upload", str(data), "--scope", "user.alice", "--rse", "CERN-DISK", account="alice")
    reps = json.loads(lake.cli("replicas", "user.alice:fragile.dat", "--json").out)
    on_disk = Path(reps[0]["replicas"][0]["url"].removeprefix("file://"))
    on_disk.write_bytes(b"flipped" + data.read_bytes()[7:])
    for mode in ([], ["--through-api"]):
        target = tmp_path / ("out" + "".join(mode))
        result = lake.cli(
            "download",
            "user.alice:fragile.dat",
            "--dir",
            str(target),
            *mode,
            account="alice",
            check=False,
        )
        assert result.code == 1, result
        assert "checksum mismatch" in result.err
        assert not [p for p in target.rglob("*") if p.is_file()]
