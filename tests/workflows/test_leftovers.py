"""What a killed worker leaves on its host is swept by the next one, and nothing else."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from vre.config import Settings
from vre.workflows import leftovers


@pytest.fixture
def tmpdir_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_secret_directories_of_ended_runs_and_stale_rucio_configs_go(tmpdir_here: Path) -> None:
    settings = Settings(home=tmpdir_here / "home")
    other = Settings(home=tmpdir_here / "other-vre")  # another VRE on the same host
    prefix = leftovers.secrets_prefix(settings)
    ended = Path(tempfile.mkdtemp(prefix=f"{prefix}7-"))
    (ended / "files").mkdir()
    (ended / "files" / "KEY").write_text("secret")
    running = Path(tempfile.mkdtemp(prefix=f"{prefix}8-"))
    foreign = Path(tempfile.mkdtemp(prefix=f"{leftovers.secrets_prefix(other)}7-"))
    stale = Path(tempfile.mkdtemp(prefix=leftovers.RUCIO_CALLS))
    old = time.time() - Settings().rucio_call_timeout - 3600
    os.utime(stale, (old, old))
    fresh = Path(tempfile.mkdtemp(prefix=leftovers.RUCIO_CALLS))  # a call under way
    asked: list[set[int]] = []

    def executing(ids: set[int]) -> dict[int, str]:
        asked.append(ids)
        return {8: "w1"}

    assert leftovers.sweep(settings, executing) == 2
    assert asked == [{7, 8}]
    assert not ended.exists() and not stale.exists()
    assert running.exists() and foreign.exists() and fresh.exists()
