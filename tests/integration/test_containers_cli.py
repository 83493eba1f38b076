"""``vre run`` with steps in podman containers: a real server, a worker configured with
``VRE_CONTAINER_RUNTIME=podman``, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.podman import PodmanStore
from tests.fixtures.server import VREServer
from tests.integration.test_replication import start_worker, stop

SPEC = """\
version: 0.9.0
inputs:
  files: [code/count.sh]
  parameters:
    n: 3
workflow:
  type: serial
  specification:
    steps:
      - name: count
        environment: {image}
        commands:
          - mkdir -p results
          - bash code/count.sh ${{n}} > results/numbers.txt
          - test ! -e /usr/bin/python3
      - name: missing
        environment: docker.io/library/never-pulled:0
        commands:
          - echo unreachable
"""


@pytest.fixture(scope="module")
def boxed_worker(vre_server: VREServer, podman_store: PodmanStore) -> Iterator[None]:
    vre_server.add_account("gina", "gina-password")
    process = start_worker(vre_server.home, VRE_RUN_POLL="0.05", VRE_CONTAINER_RUNTIME="podman")
    try:
        yield
    finally:
        stop(process)


def test_run_in_containers_records_images_and_explains_a_missing_one(
    vre_server: VREServer, boxed_worker: None, podman_store: PodmanStore, tmp_path: Path
) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code/count.sh").write_text('seq 1 "$1"\n')
    (tmp_path / "reana.yaml").write_text(SPEC.format(image=podman_store.image))
    cli = vre_server.cli
    done = cli(
        "run",
        str(tmp_path / "reana.yaml"),
        "-p",
        "n=5",
        "--name",
        "boxed",
        "--watch",
        account="gina",
        check=False,
    )
    assert done.code != 0 and "failed" in done.out + done.err
    state = json.loads(cli("status", "boxed.1", "--json", account="gina").out)
    count, missing = state["steps"]
    assert count["status"] == "finished" and count["image"] == podman_store.image_id
    assert missing["status"] == "failed" and missing["image"] is None
    assert "never-pulled:0' is not on this host" in state["error"]
    assert "podman" in state["environment_note"]
    listing = json.loads(cli("ls", "boxed.1", "--json", account="gina").out)
    assert {f["name"]: f["size"] for f in listing["files"]}["results/numbers.txt"] == 10
    table = cli("status", "boxed.1", account="gina").out
    assert podman_store.image_id[:12] in table
    assert podman_store.containers() == []
