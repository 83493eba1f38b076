"""Huge and out-of-range inputs against a real ``vre serve``: each is a 400 (or 413) with
``{"error", "message"}``, a bounded message, and never a server path."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import VREServer

HUGE = "99999999999999999999999"


@pytest.fixture(scope="module")
def lake(vre_server: VREServer, tmp_path_factory: pytest.TempPathFactory) -> VREServer:
    base = tmp_path_factory.mktemp("huge")
    blocker = base / "a-file"
    blocker.write_text("where a directory should be")
    vre_server.add_account("hugo")
    with vre_server.api() as root:
        for name, prefix in (("DISK", base / "rse"), ("BROKEN", blocker / "rse")):
            made = root.post("/rses", json={"name": name, "prefix": prefix.as_uri()})
            assert made.status_code == 201, made.text
        made = root.post("/scopes", json={"name": "hugo.s", "account": "hugo"})
        assert made.status_code == 201, made.text
    with vre_server.api("hugo") as api:
        put = api.put("/files/hugo.s/f.txt?rse=DISK", content=b"data")
        assert put.status_code == 201, put.text
    return vre_server


def refused(answer: httpx.Response, status: int = 400) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error", "message"} and body["message"]
    assert len(body["message"]) < 1100
    return str(body["message"])


def test_integers_beyond_64_bits_anywhere_are_400(lake: VREServer) -> None:
    """Every integer path and query parameter the API declares, and a run's NAME.N."""
    with lake.api() as api:
        spec = api.get("/openapi.json").json()
        tried = 0
        for path, methods in spec["paths"].items():
            for method, operation in methods.items():
                for param in operation.get("parameters", []):
                    if param["schema"].get("type") != "integer" and "anyOf" not in param["schema"]:
                        continue
                    kinds = {param["schema"].get("type")} | {
                        s.get("type") for s in param["schema"].get("anyOf", [])
                    }
                    if "integer" not in kinds:
                        continue
                    concrete = re.sub(r"\{[^}]+\}", "x", path).removeprefix("/api/v1")
                    query = {}
                    if param["in"] == "path":
                        concrete = path.replace("{" + param["name"] + "}", HUGE)
                        concrete = re.sub(r"\{[^}]+\}", "x", concrete).removeprefix("/api/v1")
                    else:
                        query = {param["name"]: HUGE}
                    answer = api.request(method.upper(), concrete, params=query)
                    message = refused(answer)
                    assert param["name"] in message, (method, path, message)
                    tried += 1
        assert tried >= 4
        for label_route in ("/runs/x.{}", "/runs/x.{}/workspace", "/runs/x.{}/logs"):
            message = refused(api.get(label_route.format(HUGE)))
            assert "run number" in message
        assert "token_id" in refused(api.delete("/tokens/" + "9" * 40))
        assert "rule_id" in refused(api.get("/rules/" + HUGE))


def test_numbers_in_bodies_and_durations_are_bounded(lake: VREServer) -> None:
    with lake.api("hugo") as api:
        rule = {"did": "hugo.s:f.txt", "rse_expression": "DISK", "lifetime": 1e308}
        assert "lifetime" in refused(api.post("/rules", json=rule))
        entry = {"scope": "hugo.s", "name": "g", "bytes": int(HUGE), "adler32": "00000001"}
        assert "bytes" in refused(
            api.post("/replicas/bulk", json={"rse": "DISK", "files": [entry]})
        )
        assert "grace" in refused(api.get("/reaper", params={"grace": "1e308"}))
    with lake.api() as root:
        assert "bytes" in refused(root.put("/quotas/hugo/DISK", json={"bytes": int(HUGE)}))


def test_a_five_megabyte_expression_is_not_echoed(lake: VREServer) -> None:
    with lake.api("hugo") as api:
        expression = "DISK&" * (1024 * 1024) + "("
        rule = {"did": "hugo.s:f.txt", "rse_expression": expression}
        message = refused(api.post("/rules", json=rule))
        assert "at most 512 characters" in message and len(message) < 400
        million = "|".join(["DISK"] * 1_000_000)
        message = refused(api.post("/rules", json={**rule, "rse_expression": million}))
        assert "at most 512 characters" in message
        stored = {r["rse_expression"] for r in api.get("/rules").json()}
        assert stored == {"DISK"}  # the upload's rule only: nothing of the huge ones


def test_a_filter_of_500_terms_is_400(lake: VREServer) -> None:
    with lake.api("hugo") as api:
        filters = ",".join(f"k{i}={i}" for i in range(500))
        assert "at most 100 terms" in refused(api.get("/dids/hugo.s", params={"filter": filters}))
        filters = ",".join(f"k{i}!={i}" for i in range(100))
        assert api.get("/dids/hugo.s", params={"filter": filters}).status_code == 200


def test_a_250_character_name_is_400_before_the_upload(lake: VREServer) -> None:
    with lake.api("hugo") as api:
        message = refused(api.put("/files/hugo.s/" + "n" * 250 + "?rse=DISK", content=b"x"))
        assert "at most 216 characters" in message
        assert str(lake.home.parent) not in message
        assert api.get("/dids/hugo.s").json()[0]["name"] == "f.txt"


def test_storage_errors_show_no_server_path(lake: VREServer) -> None:
    with lake.api("hugo") as api:
        answer = api.put("/files/hugo.s/g.txt?rse=BROKEN", content=b"data")
        message = refused(answer, 502)
    assert answer.json()["error"] == "storage_error"
    assert str(Path(lake.home).parent.parent) not in message, message
    assert "g.txt" in message
