"""One request to an external Rucio instance, run as ``python -m vre.workflows.rucio_job``.

``vre.workflows.instances.call`` starts it with ``RUCIO_CONFIG`` naming a configuration
written for this call alone, sends a JSON request on stdin and reads a JSON answer on
stdout; a failure is one line on stderr and exit code 1. Rucio's own client does the
work, checksums included: downloads are verified against the instance's catalogue.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from vre.lake.checksums import Checksummer

FINE = ("DONE", "ALREADY_DONE", "FileDownloadState.DONE", "FileDownloadState.ALREADY_DONE")


def listing(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The DID's files with their checksums, nothing moved (a restart's record)."""
    from rucio.client import Client

    files = Client().list_files(request["scope"], request["name"])
    found = [
        {
            "did": f"{f['scope']}:{f['name']}",
            "adler32": f.get("adler32"),
            "path": f"{f['scope']}/{f['name']}",
        }
        for f in files
    ]
    return sorted(found, key=lambda d: d["did"])


def download(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Every file of the DID to ``dest/<file scope>/<file name>``."""
    from rucio.client import Client
    from rucio.client.downloadclient import DownloadClient

    client = Client()
    files = list(client.list_files(request["scope"], request["name"]))
    if not files:
        return []
    dest = Path(request["dest"])
    items = [{"did": f"{f['scope']}:{f['name']}", "base_dir": str(dest)} for f in files]
    results = DownloadClient(client=client).download_dids(items)
    done = []
    for result in results:
        state = str(result.get("clientState"))
        did = f"{result['scope']}:{result['name']}"
        if state not in FINE:
            raise RuntimeError(f"{did} was not downloaded ({state})")
        done.append(
            {
                "did": did,
                "adler32": result.get("adler32"),
                "path": f"{result['scope']}/{result['name']}",
            }
        )
    return sorted(done, key=lambda d: d["did"])  # downloads finish in any order


def _adler32(path: str, block_size: int) -> str:
    """As Rucio computes it; the parent sends ``VRE_BLOCK_SIZE`` (this process never
    sees the VRE's environment)."""
    summer = Checksummer(md5=False)
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            summer.update(block)
    return summer.adler32


def upload(request: dict[str, Any]) -> dict[str, Any]:
    """One file as ``scope:name`` on ``rse``, with metadata, optionally in a dataset.

    A name that exists already is fine with the same bytes (a restarted run publishes
    again) and refused with others: files in a Rucio catalogue never change."""
    from rucio.client import Client
    from rucio.client.uploadclient import UploadClient
    from rucio.common.exception import DataIdentifierNotFound

    client = Client()
    scope, name = request["scope"], request["name"]
    try:
        existing = client.get_metadata(scope, name, plugin="ALL")
    except DataIdentifierNotFound:
        existing = None
    if existing is not None:
        mine = request.get("meta") or {}
        if any(existing.get(k) != mine.get(k) for k in ("vre_account", "vre_run")):
            raise RuntimeError(
                f"{scope}:{name} exists and was not published by this run"
                f" (vre_account {existing.get('vre_account')!r}, vre_run"
                f" {existing.get('vre_run')!r}): it is left as it is"
            )
        if existing.get("adler32") != _adler32(request["path"], request["block_size"]):
            raise RuntimeError(
                f"{scope}:{name} exists with other content (adler32 {existing.get('adler32')});"
                " files in the catalogue never change: start a new run to publish new results"
            )
        if request.get("dataset"):
            _attach(client, scope, request["dataset"], name)
        if request.get("meta"):
            client.set_metadata_bulk(scope, name, request["meta"])
        return {"did": f"{scope}:{name}", "adler32": existing["adler32"]}
    item = {
        "path": request["path"],
        "rse": request["rse"],
        "did_scope": request["scope"],
        "did_name": request["name"],
        "register_after_upload": True,
    }
    if request.get("dataset"):
        item["dataset_scope"], item["dataset_name"] = request["scope"], request["dataset"]
    UploadClient(client).upload([item])
    if request.get("meta"):
        client.set_metadata_bulk(request["scope"], request["name"], request["meta"])
    stored = client.get_metadata(request["scope"], request["name"])
    return {"did": f"{request['scope']}:{request['name']}", "adler32": stored.get("adler32")}


def _attach(client: Any, scope: str, dataset: str, name: str) -> None:
    from rucio.common.exception import DataIdentifierNotFound, FileAlreadyExists

    try:
        client.get_did(scope, dataset)
    except DataIdentifierNotFound:
        client.add_dataset(scope, dataset)
    with contextlib.suppress(FileAlreadyExists):
        client.attach_dids(scope, dataset, [{"scope": scope, "name": name}])


ACTIONS = {"download": download, "list": listing, "upload": upload}


def main() -> int:
    request = json.load(sys.stdin)
    try:
        answer = ACTIONS[request["action"]](request)
    except Exception as exc:  # the parent shows this one line to the user
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{type(exc).__name__}: {text}", file=sys.stderr)
        return 1
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
