"""Workspace retention rules: dated when the run ends, applied by the worker's housekeeping."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path, PurePosixPath

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.workflows.test_runs import execute_next, state
from vre.config import Settings
from vre.db import transaction, utcnow
from vre.identity.models import Account
from vre.workflows import retention, runs, workspace
from vre.workflows import spec as specs

SPEC = """
version: 0.9.0
inputs:
  files: [data/keep.tmp]
  parameters:
    outside: /nowhere
workflow:
  type: serial
  specification:
    steps:
      - name: make
        environment: docker.io/library/bash:5
        commands:
          - mkdir -p tmp/deep results scratch
          - echo x > tmp/a.tmp; echo y > tmp/deep/b.tmp; echo z > results/plot.tmp
          - echo big > scratch/big.dat; echo r > results/summary.json
          - ln -s "${outside}" scratch/outside
outputs:
  files: [results/summary.json, results/plot.tmp]
workspace:
  retention_days:
    "**/*.tmp": 0
    "scratch/*/*.tmp": 0
    "scratch": 3
"""


def test_rules_wait_for_the_end_then_delete_only_what_they_may(
    sessions: sessionmaker[Session], alice: Account, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.tmp"
    outside.write_text("not the run's")
    settings = Settings(home=tmp_path / "home", step_timeout=30)
    with transaction(sessions) as session:
        run = runs.create(session, alice, "kept", SPEC, settings.home)
        label, ws = run.label, Path(run.workspace)
        assert [(r.pattern, r.status) for r in retention.rules_of(session, run.id)] == [
            ("**/*.tmp", "created"),
            ("scratch/*/*.tmp", "created"),
            ("scratch", "created"),
        ]
    workspace.write(ws, "data/keep.tmp", b"an input")
    assert retention.apply_due(sessions) == 0  # not started: nothing is dated yet
    with transaction(sessions) as session:
        runs.start(session, alice, label, {"outside": str(tmp_path)})
    execute_next(sessions, settings)
    ended = state(sessions, alice, label)
    assert ended.status == "finished", ended.error
    assert retention.apply_due(sessions) == 2  # the two .tmp files nobody declared
    assert not (ws / "tmp/a.tmp").exists() and not (ws / "tmp/deep/b.tmp").exists()
    assert (ws / "data/keep.tmp").read_bytes() == b"an input"  # a declared input stays
    assert (ws / "results/plot.tmp").exists()  # a declared output stays
    assert outside.read_text() == "not the run's"  # scratch/outside/outside.tmp: a link out
    with transaction(sessions) as session:
        rules = {r.pattern: r for r in retention.rules_of(session, ended.id)}
        assert rules["**/*.tmp"].status == rules["scratch/*/*.tmp"].status == "applied"
        assert rules["scratch"].status == "active"
        assert rules["scratch"].apply_on == ended.finished_at + timedelta(days=3)
    assert retention.apply_due(sessions, utcnow() + timedelta(days=2)) == 0
    assert retention.apply_due(sessions, utcnow() + timedelta(days=4)) == 1
    assert not (ws / "scratch").exists() and outside.exists()
    assert (ws / "results/summary.json").exists()
    with transaction(sessions) as session:  # a restart dates the rules again at its end
        runs.start(session, alice, label, restart_from="make")
        assert {r.status for r in retention.rules_of(session, ended.id)} == {"created"}


def test_staged_inputs_and_stage_out_sources_are_protected() -> None:
    spec = specs.parse(
        SPEC.replace(
            "outputs:\n  files: [results/summary.json, results/plot.tmp]",
            "outputs:\n  files: [results/plot.tmp, 'rucio(local, s, results/pub.tmp)']",
        ).replace("files: [data/keep.tmp]", "files: [data/keep.tmp, 'rucio(local, s, ds)']")
    )
    kept = retention.protected(spec)
    assert {PurePosixPath("results/pub.tmp"), PurePosixPath("inputs")} <= kept


@pytest.mark.parametrize("pattern", ["", ".", "./", " ", "../x", "/abs/*"])
def test_patterns_that_name_no_files_in_the_workspace_are_refused(pattern: str) -> None:
    text = SPEC.replace('"scratch": 3', f"{pattern!r}: 1")
    with pytest.raises(specs.SpecError, match="retention_days"):
        specs.parse(text)
    assert not retention.usable(pattern)
