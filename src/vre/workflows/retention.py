"""Workspace retention rules (``workspace.retention_days`` in reana.yaml), as REANA has them.

A rule ``PATTERN: DAYS`` is ``created`` with its run, becomes ``active`` when the run
ends (``apply_on`` = end + DAYS) and ``applied`` once a worker has deleted the workspace
files matching PATTERN. The specification's declared inputs and outputs are never
deleted, nor is anything outside the workspace: matches are checked after resolving,
and a link is removed as a link, never followed.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from vre.db import transaction, utcnow
from vre.workflows import spec as specs
from vre.workflows.models import DONE_STATES, RetentionRule, Run

log = logging.getLogger(__name__)
CREATED, ACTIVE, APPLIED = "created", "active", "applied"


def create(session: Session, run: Run, spec: specs.Spec) -> None:
    session.add_all(
        RetentionRule(run_id=run.id, pattern=pattern, days=days, status=CREATED)
        for pattern, days in sorted(spec.retention_days.items())
    )


def reset(session: Session, run_id: int) -> None:
    """A restarted run: its rules wait for its new end."""
    session.execute(
        update(RetentionRule)
        .where(RetentionRule.run_id == run_id)
        .values(status=CREATED, apply_on=None)
    )


def rules_of(session: Session, run_id: int) -> list[RetentionRule]:
    query = select(RetentionRule).where(RetentionRule.run_id == run_id)
    return list(session.scalars(query.order_by(RetentionRule.days, RetentionRule.pattern)))


def activate(session: Session) -> int:
    """Rules of runs that ended get their date: one query to find them, one update each."""
    found = session.execute(
        select(RetentionRule, Run.finished_at)
        .join(Run, Run.id == RetentionRule.run_id)
        .where(RetentionRule.status == CREATED, Run.status.in_(DONE_STATES))
        .where(Run.finished_at.is_not(None))
    ).all()
    for rule, finished in found:
        if finished is not None:  # (the query asked for it; the type does not know)
            rule.status, rule.apply_on = ACTIVE, finished + timedelta(days=rule.days)
    return len(found)


def apply_due(sessions: sessionmaker[Session], now: datetime | None = None) -> int:
    """Delete what active rules past their date match; returns the files and directories gone."""
    moment = now or utcnow()
    with transaction(sessions) as session:
        activate(session)
        due = session.execute(
            select(RetentionRule, Run)
            .join(Run, Run.id == RetentionRule.run_id)
            .where(RetentionRule.status == ACTIVE, RetentionRule.apply_on <= moment)
        ).all()
        work = [
            (r.run_id, r.pattern, Path(run.workspace), specs.from_document(run.spec))
            for r, run in due
        ]
    removed = 0
    for run_id, pattern, ws, spec in work:
        # Claim first: a restart may have reset the rule, or another worker taken it.
        with transaction(sessions) as session:
            ended = select(Run.id).where(Run.id == run_id, Run.status.in_(DONE_STATES))
            claimed = session.execute(
                update(RetentionRule)
                .where(RetentionRule.run_id == run_id, RetentionRule.pattern == pattern)
                .where(RetentionRule.status == ACTIVE, RetentionRule.run_id.in_(ended))
                .values(status=APPLIED)
            )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue
        try:
            removed += remove_matching(ws, pattern, protected(spec))
        except (OSError, ValueError) as exc:  # one bad rule must not stop the others
            log.warning("retention rule %r of run %s: %s", pattern, run_id, exc)
            continue
        log.info("retention rule %r of run %s applied", pattern, run_id)
    return removed


def protected(spec: specs.Spec) -> set[PurePosixPath]:
    """Declared inputs and outputs, staged inputs and stage-out sources included."""
    declared = [*spec.input_files, *spec.input_directories]
    declared += [*spec.output_files, *spec.output_directories]
    declared += [out.path for out in spec.rucio_outputs]
    if spec.rucio_inputs:
        declared.append("inputs")  # where stage-in puts every file it brings
    return {PurePosixPath(p.strip("/")) for p in declared}


def remove_matching(ws: Path, pattern: str, keep: set[PurePosixPath]) -> int:
    if not usable(pattern) or not ws.is_dir():
        return 0
    base = ws.resolve()
    removed = 0
    for match in sorted(ws.glob(pattern), key=lambda p: len(p.parts), reverse=True):
        relative = PurePosixPath(match.relative_to(ws).as_posix())
        if relative.parts[:1] == (".vre",) or _touches(relative, keep):
            continue
        if match.parent.resolve() != base and base not in match.parent.resolve().parents:
            continue  # reached through a link out of the workspace
        if match.is_symlink() or match.is_file():
            match.unlink(missing_ok=True)
        elif match.is_dir():
            shutil.rmtree(match, ignore_errors=True)
        else:
            continue
        removed += 1
    return removed


def usable(pattern: str) -> bool:
    """A pattern that names something inside the workspace, not the workspace itself."""
    parts = PurePosixPath(pattern.strip()).parts
    if not parts or PurePosixPath(pattern).is_absolute() or ".." in pattern.split("/"):
        return False
    return any(p not in (".", "") for p in parts)


def _touches(path: PurePosixPath, keep: set[PurePosixPath]) -> bool:
    """A declared path, inside one, or a directory holding one."""
    return any(path == k or k in path.parents or path in k.parents for k in keep)
