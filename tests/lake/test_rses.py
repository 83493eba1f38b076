"""Storage elements: who may add them, names, prefixes, attributes and expressions."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from vre.api.app import create_app
from vre.config import Settings
from vre.db import transaction
from vre.errors import Conflict, Forbidden, Invalid, NotFound
from vre.identity.models import Account
from vre.lake import rses


def test_add_rse(
    sessions: sessionmaker[Session], root: Account, alice: Account, tmp_path: Path
) -> None:
    prefix = (tmp_path / "disk").as_uri()
    with transaction(sessions) as session:
        rse = rses.add(session, root, "DISK_1", prefix + "/", {"site": "HERE", "tier": 1})
        assert rse.prefix == prefix  # a trailing slash is dropped
    with transaction(sessions) as session:
        assert rses.get(session, "DISK_1").id == rse.id
        assert rses.attributes(session, rse) == {"site": "HERE", "tier": "1"}
        rses.add(session, root, "XRD", "root://host.example:1094//store/")
        assert rses.get(session, "XRD").prefix == "root://host.example:1094//store"
        assert [r.name for r in rses.list_all(session)] == ["DISK_1", "XRD"]
        with pytest.raises(NotFound):
            rses.get(session, "NOPE")

    refused: list[tuple[type[Exception], Account, str, str, dict[str, str]]] = [
        (Forbidden, alice, "ALICE-DISK", prefix, {}),
        (Conflict, root, "DISK_1", (tmp_path / "other").as_uri(), {}),
        *[
            (Invalid, root, bad, prefix, {})
            for bad in (
                "",
                "-DISK",
                "_DISK",
                "DISK ONE",
                "DISK.1",
                "DISK/1",
                "DISK:1",
                "D" * 65,
                "DISK\n",  # a trailing newline must not slip through '$'
            )
        ],
        *[
            (Invalid, root, "NEW", bad, {})
            for bad in (
                "",
                "/plain/path",
                "relative/path",
                "ftp://host/path",
                "http:///no-host",
                "davs://user:secret@host/path",
                "s3://Bad_Bucket",
                "s3://bucket:9000/path",
                "file://host/path",
                "file:relative",
                "root://host/single-slash",
                "root:///no-host",
            )
        ],
        *[
            (Invalid, root, "NEW", prefix, bad)
            for bad in (
                {"bad key": "x"},
                {"": "x"},
                {"k": ""},
                {"k": "a=b"},
                {"k": "a b"},
                {"k": "a&b"},
                {"k" * 65: "x"},
            )
        ],
    ]
    accepted = []
    for error, actor, name, bad_prefix, attributes in refused:
        try:
            with transaction(sessions) as session:
                rses.add(session, actor, name, bad_prefix, attributes)
        except error:
            continue
        accepted.append((name, bad_prefix, attributes))
    assert accepted == []
    with transaction(sessions) as session:
        assert [r.name for r in rses.list_all(session)] == ["DISK_1", "XRD"]  # nothing added
        assert rses.all_with_attributes(session) == {
            "DISK_1": {"site": "HERE", "tier": "1"},
            "XRD": {},
        }


def test_attributes(
    sessions: sessionmaker[Session], root: Account, alice: Account, tmp_path: Path
) -> None:
    with transaction(sessions) as session:
        rse = rses.add(session, root, "DISK", tmp_path.as_uri(), {"type": "disk"})
    with transaction(sessions) as session:
        rses.set_attribute(session, root, "DISK", "site", "CERN")
        rses.set_attribute(session, root, "DISK", "type", "tape")  # overwrite
        rses.set_attribute(session, root, "DISK", "region", "eu-west:1")
    with transaction(sessions) as session:
        assert rses.attributes(session, rse) == {
            "region": "eu-west:1",
            "site": "CERN",
            "type": "tape",
        }
        assert rses.resolve(session, "type=tape") == ["DISK"]
        rses.delete_attribute(session, root, "DISK", "region")
    for call in (
        lambda s: rses.set_attribute(s, alice, "DISK", "site", "EVIL"),
        lambda s: rses.delete_attribute(s, alice, "DISK", "site"),
    ):
        with pytest.raises(Forbidden), transaction(sessions) as session:
            call(session)
    for error, call in (
        (NotFound, lambda s: rses.delete_attribute(s, root, "DISK", "region")),
        (NotFound, lambda s: rses.set_attribute(s, root, "NOPE", "site", "X")),
        (Invalid, lambda s: rses.set_attribute(s, root, "DISK", "bad key", "X")),
        (Invalid, lambda s: rses.set_attribute(s, root, "DISK", "site", "a|b")),
    ):
        with pytest.raises(error), transaction(sessions) as session:
            call(session)
    with transaction(sessions) as session:
        assert rses.attributes(session, rses.get(session, "DISK")) == {
            "site": "CERN",
            "type": "tape",
        }


RSES = {
    "CERN-DISK": {"site": "CERN", "type": "disk", "tier": "0", "freespace": "500"},
    "CERN-TAPE": {"site": "CERN", "type": "tape", "tier": "0", "tape": "true"},
    "DESY-DISK": {"site": "DESY", "type": "disk", "tier": "1", "freespace": "120.5"},
    "XRD_1": {"site": "LOCAL", "type": "disk", "tier": "2"},
}

EXPRESSIONS = [
    ("CERN-DISK", ["CERN-DISK"]),
    ("*", sorted(RSES)),
    ("site=CERN", ["CERN-DISK", "CERN-TAPE"]),
    ("site=CERN&type=disk", ["CERN-DISK"]),
    ("CERN-DISK|DESY-DISK", ["CERN-DISK", "DESY-DISK"]),
    ("type=disk\\site=CERN", ["DESY-DISK", "XRD_1"]),
    ("tier=1\\site=DESY", []),
    ("*\\type=disk", ["CERN-TAPE"]),
    ("(site=CERN|site=DESY)&type=disk", ["CERN-DISK", "DESY-DISK"]),
    ("site=CERN|site=DESY&type=disk", ["CERN-DISK", "DESY-DISK"]),  # left to right
    ("type=disk&(site=CERN|site=DESY)", ["CERN-DISK", "DESY-DISK"]),
    ("freespace>200", ["CERN-DISK"]),
    ("freespace<200", ["DESY-DISK"]),
    ("tier<1", ["CERN-DISK", "CERN-TAPE"]),
    ("tape=true", ["CERN-TAPE"]),
    ("site=NOWHERE", []),
    (" site = CERN & tier = 0 ", ["CERN-DISK", "CERN-TAPE"]),
]

BAD_EXPRESSIONS = [
    "",
    "site=",
    "=CERN",
    "site=CERN&",
    "&site=CERN",
    "(site=CERN",
    "site=CERN)",
    "site=CERN type=disk",
    "tier>high",
    "site=CERN;DROP",
    "site==CERN",
    "NO-SUCH-RSE",
    "CERN-DISK|NO-SUCH-RSE",
    "(" * 200 + "CERN-DISK" + ")" * 200,
]


def test_resolve(sessions: sessionmaker[Session], root: Account, tmp_path: Path) -> None:
    with transaction(sessions) as session:
        for name, attributes in RSES.items():
            rses.add(session, root, name, (tmp_path / name).as_uri(), attributes)
    with transaction(sessions) as session:
        got = {expression: rses.resolve(session, expression) for expression, _ in EXPRESSIONS}
        assert got == dict(EXPRESSIONS)
        for expression in BAD_EXPRESSIONS:
            with pytest.raises(Invalid) as caught:
                rses.resolve(session, expression)
            message = caught.value.message
            assert "position" in message, (expression, message)
            assert "\n" not in message  # one line, fit for an HTTP error body
        # attributes changed later are seen by the next resolution
        rses.set_attribute(session, root, "XRD_1", "site", "CERN")
        assert rses.resolve(session, "site=CERN&type=disk") == ["CERN-DISK", "XRD_1"]


S3_OPTIONS = {"endpoint_url": "http://127.0.0.1:9000", "key": "AKID", "secret": "s3cr3t-value"}


def test_options(
    sessions: sessionmaker[Session], root: Account, alice: Account, tmp_path: Path
) -> None:
    with transaction(sessions) as session:
        rse = rses.add(session, root, "S3", "s3://bucket/vre", {"type": "disk"}, S3_OPTIONS)
        rses.add(
            session, root, "DAV", "davs://dav.example.org:2880/data", None, {"verify": "false"}
        )
        rses.add(session, root, "PLAIN", "http://127.0.0.1:8080/dav")
    with transaction(sessions) as session:
        rse = rses.get(session, "S3")
        assert rses.opened_options(rse) == S3_OPTIONS  # stored (sealed) for the storage layer
        assert rses.option_keys(rse) == ["endpoint_url", "key", "secret"]
        assert rses.option_keys(rses.get(session, "PLAIN")) == []
        assert rses.opened_options(rses.get(session, "DAV")) == {"verify": "false"}
        rses.set_options(session, root, "S3", {**S3_OPTIONS, "secret": "rotated", "region": "x"})
    with transaction(sessions) as session:
        assert rses.opened_options(rses.get(session, "S3"))["secret"] == "rotated"
        assert rses.option_keys(rses.get(session, "S3")) == [
            "endpoint_url",
            "key",
            "region",
            "secret",
        ]
    refused = [
        (Forbidden, lambda s: rses.add(s, alice, "MINE", "s3://bucket", None, S3_OPTIONS)),
        (Forbidden, lambda s: rses.set_options(s, alice, "S3", {"secret": "stolen"})),
        (NotFound, lambda s: rses.set_options(s, root, "NOPE", {})),
        (Invalid, lambda s: rses.add(s, root, "NEW", "s3://bucket", None, {"endpoint": "x"})),
        (Invalid, lambda s: rses.add(s, root, "NEW", tmp_path.as_uri(), None, {"key": "k"})),
        (Invalid, lambda s: rses.add(s, root, "NEW", "davs://h/x", None, {"username": "u"})),
        (Invalid, lambda s: rses.add(s, root, "NEW", "s3://bucket", None, {"key": ""})),
        (Invalid, lambda s: rses.set_options(s, root, "S3", {"verify": "x", "bogus": "y"})),
        (Invalid, lambda s: rses.set_options(s, root, "PLAIN", {"endpoint_url": "http://x"})),
    ]
    for error, call in refused:
        with pytest.raises(error), transaction(sessions) as session:
            call(session)
    with transaction(sessions) as session:
        assert [r.name for r in rses.list_all(session)] == ["DAV", "PLAIN", "S3"]
        assert rses.opened_options(rses.get(session, "S3"))["secret"] == "rotated"  # unchanged
        rses.set_options(session, root, "S3", {})
    with transaction(sessions) as session:
        assert rses.get(session, "S3").options == {}


def test_options_are_never_returned_by_the_api(db_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=db_url, root_password="root-pass-1")
    with TestClient(create_app(settings)) as client:

        def login(account: str, password: str) -> dict[str, str]:
            body = {"account": account, "password": password}
            answer = client.post("/api/v1/auth/login", json=body)
            assert answer.status_code == 201, answer.text
            return {"Authorization": f"Bearer {answer.json()['token']}"}

        root = login("root", "root-pass-1")
        body = {"name": "alice", "password": "alice-password"}
        assert client.post("/api/v1/accounts", json=body, headers=root).status_code == 201
        alice = login("alice", "alice-password")
        rse = {"name": "S3", "prefix": "s3://bucket/vre", "options": S3_OPTIONS}
        assert client.post("/api/v1/rses", json=rse, headers=alice).status_code == 403
        created = client.post("/api/v1/rses", json=rse, headers=root)
        assert created.status_code == 201, created.text
        assert created.json()["options"] == ["endpoint_url", "key", "secret"]
        bad = {**rse, "name": "S3B", "options": {"endpiont_url": "http://x"}}
        refused = client.post("/api/v1/rses", json=bad, headers=root)
        assert refused.status_code == 400 and "endpiont_url" in refused.json()["message"]
        bad = {**rse, "name": "S3C", "prefix": "gopher://bucket"}
        assert client.post("/api/v1/rses", json=bad, headers=root).json()["error"] == "invalid"
        update = {"options": {**S3_OPTIONS, "secret": "rotated-secret"}}
        answer = client.put("/api/v1/rses/S3/options", json=update, headers=alice)
        assert answer.status_code == 403
        answer = client.put("/api/v1/rses/S3/options", json=update, headers=root)
        assert answer.status_code == 200 and answer.json()["options"] == [
            "endpoint_url",
            "key",
            "secret",
        ]
        answers = [
            created,
            answer,
            client.get("/api/v1/rses", headers=alice),
            client.get("/api/v1/rses/S3", headers=alice),
            client.get("/api/v1/rses/S3", headers=root),
            client.get("/api/v1/rses?expression=S3", headers=root),
            client.put("/api/v1/rses/S3/attributes/site", json={"value": "X"}, headers=root),
        ]
        for shown in answers:
            assert shown.status_code in (200, 201), shown.text
            for secret in ("s3cr3t-value", "rotated-secret", "AKID", "127.0.0.1:9000"):
                assert secret not in shown.text
        assert client.get("/api/v1/rses/S3", headers=alice).json()["options"] == [
            "endpoint_url",
            "key",
            "secret",
        ]
