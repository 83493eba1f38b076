"""Runs: create ``name.N`` with a workspace, start, stop, restart, delete.

Executing a run is the worker's job (``vre.workflows.engines``); here is only the
state a user changes, each change checked against who owns the run.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from vre import policy
from vre.db import utcnow
from vre.errors import Conflict, Invalid, NotFound
from vre.identity.models import Account
from vre.leases import Lease, claimable
from vre.workflows import retention, run_logs, workspace
from vre.workflows import spec as specs
from vre.workflows.engines import ENGINES
from vre.workflows.models import (
    ACTIVE,
    CREATED,
    DELETED,
    FAILED,
    PENDING,
    QUEUED,
    RUNNING,
    STOPPED,
    Run,
    RunStep,
)

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,127}\Z")


def load_spec(run: Run) -> specs.Spec:
    return specs.from_document(run.spec)


def create(session: Session, actor: Account, name: str, text: str, home: Path) -> Run:
    """A new run of a specification; its workspace exists, nothing runs yet."""
    if not RUN_NAME.match(name or ""):
        raise Invalid(
            f"invalid run name {name!r}: letters, digits, '_' or '-' (no dots: runs are NAME.N)"
        )
    spec = specs.parse(text)
    number = (
        session.scalar(
            select(func.max(Run.number)).where(Run.account_id == actor.id, Run.name == name)
        )
        or 0
    ) + 1
    # 0700 whatever the umask; one left by a create that rolled back is reused
    directory = workspace.create(home, actor.name, f"{name}.{number}")
    run = Run(
        account_id=actor.id,
        name=name,
        number=number,
        status=CREATED,
        spec=spec.raw,
        spec_text=text,
        spec_digest=spec.digest(),
        parameters={},
        workspace=str(directory),
        steps_total=len(spec.steps),
    )
    session.add(run)
    session.flush()
    session.add_all(
        RunStep(
            run_id=run.id,
            index=i,
            name=step.name,
            environment=step.environment,
            compute_backend=step.compute_backend,
        )
        for i, step in enumerate(spec.steps)
    )
    retention.create(session, run, spec)
    return run


def find(session: Session, actor: Account, label: str) -> Run:
    """``name.N``, or ``name`` for the newest; another account's run does not exist.

    An admin reaches every account's runs: their own first, then another account's
    when only one account has a run of that label."""
    name, _, number = label.rpartition(".") if "." in label else (label, "", "")
    query = select(Run).where(Run.name == name, Run.status != DELETED)
    query = policy.visible_to(query, actor, Run.account_id, "run.manage")
    if policy.is_admin(actor):  # their owners are compared: one query for them all
        query = query.options(selectinload(Run.owner))
    if number:
        if not number.isdigit():
            raise Invalid(f"invalid run {label!r}: expected NAME or NAME.N")
        query = query.where(Run.number == int(number))
    found = list(session.scalars(query.order_by(Run.number.desc())))
    if not found:
        raise NotFound(f"run {label!r} does not exist")
    own = [r for r in found if r.account_id == actor.id]
    if own:
        return own[0]
    owners = sorted({r.owner.name for r in found})
    if len(owners) > 1:
        raise Conflict(
            f"run {label!r} exists for several accounts ({', '.join(owners)}):"
            " only its owner can name it unambiguously"
        )
    return found[0]


def executing(session: Session, ids: set[int]) -> dict[int, str]:
    """Which of these runs a worker is executing right now, and which worker."""
    query = select(Run.id, Run.worker).where(Run.id.in_(ids), Run.status.in_((PENDING, RUNNING)))
    return {run_id: worker or "" for run_id, worker in session.execute(query)}


def list_runs(session: Session, actor: Account, *, include_deleted: bool = False) -> list[Run]:
    query = policy.visible_to(select(Run), actor, Run.account_id, "run.list_all")
    if not include_deleted:
        query = query.where(Run.status != DELETED)
    query = query.options(selectinload(Run.owner))  # one query for every run's owner
    return list(session.scalars(query.order_by(Run.created_at.desc(), Run.id.desc())))


def start(
    session: Session,
    actor: Account,
    label: str,
    parameters: dict[str, Any] | None = None,
    *,
    restart_from: str | None = None,
    instances: Collection[str] | None = None,
) -> Run:
    """Queue a run for the workers, with parameter overrides (restart: from a step).

    ``instances`` are the Rucio instances this VRE knows: a run naming another one is
    refused now rather than failing at stage-in."""
    run = find(session, actor, label)
    spec = load_spec(run)
    if instances is not None:
        named = {e.instance for e in spec.rucio_inputs} | {e.instance for e in spec.rucio_outputs}
        unknown = sorted(named - set(instances))
        if unknown:
            raise Invalid(
                f"Rucio instance(s) {', '.join(unknown)} not configured on this VRE"
                f" (known: {', '.join(sorted(instances))})"
            )
    if spec.workflow_type not in ENGINES:
        raise Invalid(
            f"the {spec.workflow_type} engine is not available yet: this VRE runs"
            f" {', '.join(ENGINES)} workflows"
        )
    if run.status in ACTIVE:
        raise Conflict(f"run {run.label} is already {run.status}")
    if restart_from is None and run.status != CREATED:
        raise Conflict(f"run {run.label} has run already: restart it, or start a new run")
    unknown = sorted(set(parameters or {}) - set(spec.parameters))
    if unknown:
        known = ", ".join(sorted(spec.parameters)) or "none"
        raise Invalid(f"unknown parameter(s) {', '.join(unknown)}: the specification has {known}")
    if restart_from is not None:
        names = [s.name for s in spec.steps]
        if restart_from and restart_from not in names:
            raise Invalid(f"no step {restart_from!r} in run {run.label}: steps are {names}")
    run.parameters = {**spec.parameters, **(run.parameters or {}), **(parameters or {})}
    run.restart_from = restart_from or None
    run.status, run.queued_at = QUEUED, utcnow()
    run.stop_requested, run.error, run.exit_code = False, None, None
    run.finished_at = None
    if restart_from is not None:
        retention.reset(session, run.id)
    return run


def stop(session: Session, actor: Account, label: str) -> Run:
    run = find(session, actor, label)
    if run.status not in ACTIVE:
        raise Conflict(f"run {run.label} is {run.status}: only a queued or running run stops")
    # Conditional: a worker may claim the run at this very moment; then it must stop it.
    stopped = session.execute(
        update(Run)
        .where(Run.id == run.id, Run.status == QUEUED)
        .values(status=STOPPED, finished_at=utcnow())
    )
    if stopped.rowcount != 1:  # type: ignore[attr-defined]
        session.execute(update(Run).where(Run.id == run.id).values(stop_requested=True))
    session.refresh(run)
    return run


def delete(session: Session, actor: Account, label: str, *, keep_workspace: bool = True) -> Run:
    run = find(session, actor, label)
    if run.status in ACTIVE:
        raise Conflict(f"run {run.label} is {run.status}: stop it first")
    run.status = DELETED
    if not keep_workspace:
        shutil.rmtree(run.workspace, ignore_errors=True)
        shutil.rmtree(run_logs.logs_of(Path(run.workspace)), ignore_errors=True)
    return run


def steps_of(session: Session, run: Run) -> list[RunStep]:
    return list(
        session.scalars(select(RunStep).where(RunStep.run_id == run.id).order_by(RunStep.index))
    )


def running_count(session: Session, account_id: int) -> int:
    return (
        session.scalar(
            select(func.count()).where(
                Run.account_id == account_id, Run.status.in_((PENDING, RUNNING))
            )
        )
        or 0
    )


def lease(worker: str, seconds: float) -> Lease:
    """A worker's lease on the runs it executes; a run that ended is no longer held."""
    return Lease(Run, worker, seconds, held=Run.status.in_((PENDING, RUNNING)))


def reap_orphans(session: Session) -> int:
    """Runs whose worker stopped renewing its lease failed; the user can restart them."""
    now = utcnow()
    result = session.execute(
        update(Run)
        .where(Run.status.in_((PENDING, RUNNING)), Run.lease_until < now)
        .values(
            status=FAILED,
            finished_at=now,
            error="the worker running this run stopped; 'vre restart' runs it again",
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _inactive_accounts() -> Select[int]:
    """Accounts whose runs no worker takes: a disabled account's wait until it is enabled
    again, a deleted account's never run."""
    inactive = or_(Account.disabled_at.is_not(None), Account.deleted_at.is_not(None))
    return select(Account.id).where(inactive)


def stopping(run_id: int) -> Select[bool]:
    """Whether a running run must stop: asked for, or its account disabled or deleted."""
    return select(
        or_(Run.stop_requested.is_(True), Run.account_id.in_(_inactive_accounts()))
    ).where(Run.id == run_id)


def claim(session: Session, held: Lease, per_account: int, limit: int) -> list[int]:
    """Queued runs this worker takes, oldest first, at most ``per_account`` active each.

    The run queue belongs to runs, not to an engine: any engine executes what is taken.
    Orphans are failed first (a write: on SQLite the claim then holds the write lock)."""
    reap_orphans(session)
    queued = select(Run.id, Run.account_id).where(Run.status == QUEUED)
    queued = queued.where(Run.account_id.not_in(_inactive_accounts()))
    queued = queued.order_by(Run.queued_at, Run.id).limit(limit * 4)
    active = dict(
        session.execute(
            select(Run.account_id, func.count())
            .where(Run.status.in_((PENDING, RUNNING)))
            .group_by(Run.account_id)
        ).all()
    )
    chosen: list[int] = []
    for run_id, account_id in session.execute(claimable(session, queued)):
        if len(chosen) == limit or active.get(account_id, 0) >= per_account:
            continue
        active[account_id] = active.get(account_id, 0) + 1
        chosen.append(run_id)
    if not chosen:
        return []
    pick = select(Run.id).where(Run.id.in_(chosen), Run.status == QUEUED)
    return held.for_claim().take(session, pick, status=PENDING)
