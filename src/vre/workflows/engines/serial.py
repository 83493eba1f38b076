"""The serial engine: REANA's semantics, steps in order, commands in order, stop at
the first failure. ``${parameter}`` is substituted in each command before bash sees it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from vre import leases
from vre.config import Settings
from vre.db import transaction, utcnow
from vre.errors import QuotaExceeded, VREError
from vre.identity.models import Account
from vre.leases import Lease
from vre.workflows import leftovers, run_logs, runs, staging, workspace
from vre.workflows import spec as specs
from vre.workflows.backends import local, runner
from vre.workflows.models import (
    FAILED,
    FINISHED,
    RUNNING,
    STOPPED,
    Run,
    RunStep,
    Secret,
)

log = logging.getLogger(__name__)


QUOTA_EVERY = 2.0  # seconds between looks at the workspace quota while a command runs


class _Execution:
    """One claimed run as its worker executes it, under the lease the worker holds.

    The lease is renewed by one background heartbeat (``vre.leases``) from claim to
    the end, staging included. A worker that finds the lease lost (it was too slow,
    the run was failed as orphaned and maybe restarted elsewhere) stops the command
    and writes nothing more: the run is no longer its own."""

    def __init__(
        self, sessions: sessionmaker[Session], run_id: int, settings: Settings, lease: Lease
    ) -> None:
        self.sessions, self.run_id, self.settings, self.lease = sessions, run_id, settings, lease
        self._checked = self._measured = 0.0
        self._stop = False
        self._lost = False
        self.owner: str | None = None  # whose workspace quota the commands are held to
        self.full: str | None = None  # why a command was stopped for the quota
        self.heart: leases.Heartbeat | None = None
        # "Still ours", built once: every write about the run carries it.
        self._held = lease.held_where([run_id])
        self._ours = select(Run.id).where(*self._held).exists()

    @property
    def lost(self) -> bool:
        if self.heart is not None and self.run_id in self.heart.lost:
            self._lost = True
        return self._lost

    def _write(self, statement: Any) -> None:
        """A write about the run, made only while it is still ours (else: lost)."""
        if self.lost:
            return
        with transaction(self.sessions) as session:
            if session.execute(statement).rowcount == 0:  # type: ignore[attr-defined]
                log.warning("run %s is no longer this worker's: it stops here", self.run_id)
                self._lost = True

    def update_run(self, **values: Any) -> None:
        self._write(update(Run).where(*self._held).values(**values))

    def update_step(self, index: int, **values: Any) -> None:
        self._write(
            update(RunStep)
            .where(RunStep.run_id == self.run_id, RunStep.index == index, self._ours)
            .values(**values)
        )

    def should_stop(self) -> bool:
        """Asked every ~0.2 s while a command runs; reads the database at most every 0.5 s."""
        if self.lost:
            return True
        now = time.monotonic()
        if not self._stop and now - self._checked > 0.5:
            self._checked = now
            with transaction(self.sessions) as session:
                self._stop = bool(session.scalar(runs.stopping(self.run_id)))
        if not self._stop and self.owner and now - self._measured > QUOTA_EVERY:
            self._measured = now  # a command filling the disk is stopped while it runs
            self.full = _over_quota(self.settings, self.owner)
            self._stop = self.full is not None
        return self._stop


def _environment(
    ws: Path, label: str, secrets: list[Secret], private: Path
) -> runner.StepEnvironment:
    home = ws / ".vre" / "home"  # tools' caches land here, not among the results
    home.mkdir(parents=True, exist_ok=True)
    variables = dict(HOME=str(home), REANA_WORKSPACE=str(ws), VRE_WORKSPACE=str(ws), VRE_RUN=label)
    hidden: dict[str, str] = {}
    for secret in secrets:
        if secret.kind == "file":  # outside the workspace: never listed, fetched or zipped
            path = private / runner.SECRET_FILES / secret.name
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secret.value)
            variables[secret.name] = str(path)
        else:
            hidden[secret.name] = secret.value
    return runner.StepEnvironment(ws, variables, hidden, private)


def _hidden(secrets: list[Secret]) -> list[str]:
    """What logs and statuses mask: every secret whole, and each line of a secret of
    several lines (output arrives line by line); longest first, so none leaks in part."""
    values = {s.value for s in secrets if s.value}
    values |= {line for s in secrets for line in s.value.splitlines() if line.strip()}
    return sorted(values, key=len, reverse=True)


@dataclass
class _Plan:
    """What a claimed run executes, read once from the database."""

    spec: specs.Spec
    ws: Path
    label: str
    params: dict[str, Any]
    restart_from: str | None
    owner: Account
    digest: str
    worker: str


def execute(sessions: sessionmaker[Session], run_id: int, settings: Settings) -> str:
    """Run every step of a claimed run; returns the final status."""
    with transaction(sessions) as session:
        run = session.get(Run, run_id)
        assert run is not None
        owner = session.get(Account, run.account_id)
        assert owner is not None
        plan = _Plan(
            runs.load_spec(run),
            Path(run.workspace),
            run.label,
            dict(run.parameters or {}),
            run.restart_from,
            owner,
            run.spec_digest,
            run.worker or "",
        )
        secrets = list(session.scalars(select(Secret).where(Secret.account_id == run.account_id)))
    hidden = _hidden(secrets)
    private = Path(tempfile.mkdtemp(prefix=f"{leftovers.secrets_prefix(settings)}{run_id}-"))
    held = runs.lease(plan.worker, settings.run_lease)
    job = _Execution(sessions, run_id, settings, held)
    job.owner = plan.owner.name
    try:
        with leases.held(sessions, held, [run_id]) as job.heart:
            environment = _environment(plan.ws, plan.label, secrets, private)
            environment.worker, environment.run_id = plan.worker, run_id
            status = _steps(job, plan, environment, hidden)
        with transaction(sessions) as session:
            held.release(session, [run_id])
        return status
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _steps(
    job: _Execution, plan: _Plan, environment: runner.StepEnvironment, hidden: list[str]
) -> str:
    spec, ws, owner = plan.spec, plan.ws, plan.owner
    sessions, settings, restart_from = job.sessions, job.settings, plan.restart_from
    known = settings.rucio_instances_file()
    names = [s.name for s in spec.steps]
    first = names.index(restart_from) if restart_from in names else 0
    job.update_run(status=RUNNING, started_at=utcnow(), steps_done=first)
    try:
        job.update_run(current_step="stage-in")
        if first == 0:
            staged = staging.stage_in(sessions, owner, ws, spec.rucio_inputs, configured=known)
        else:  # a restart keeps what was staged; provenance still names it
            staged = staging.describe(sessions, owner, spec.rucio_inputs, configured=known)
    except VREError as exc:
        job.update_run(status=FAILED, finished_at=utcnow(), error=f"stage-in: {exc.message}")
        return FAILED
    if job.lost:
        return STOPPED
    environment.links = [(s.path, s.target, s.whole_scope) for s in staged if s.linked and s.target]
    try:
        steps_in = runner.for_settings(settings, environment)
    except VREError as exc:
        job.update_run(status=FAILED, finished_at=utcnow(), error=exc.message)
        return FAILED
    job.update_run(environment_note=steps_in.note)
    for index, step in enumerate(spec.steps):
        if index < first:
            continue
        ended = _step(job, plan, steps_in, index, step, hidden)
        if ended is not None:
            return ended
    if job.lost:  # the run is another claim's now: it publishes nothing from here
        return STOPPED
    return _stage_out(job, plan, staged)


def _step(
    job: _Execution,
    plan: _Plan,
    steps_in: runner.Runner,
    index: int,
    step: specs.Step,
    hidden: list[str],
) -> str | None:
    """Run one step's commands; the run's final status if it ends here, else None."""
    job.update_run(current_step=step.name)
    job.update_step(index, status=RUNNING, started_at=utcnow(), exit_code=None)
    run_logs.make_logs(plan.ws)
    logfile = run_logs.log_path(plan.ws, index, step.name)
    logfile.unlink(missing_ok=True)
    try:
        image = steps_in.prepare(step.environment)
    except VREError as exc:
        return _fail(job, index, f"step {step.name!r}: {exc.message}")
    job.update_step(index, image=image)
    for number, command in enumerate(step.commands):
        text = specs.substitute(command, plan.params)
        job.update_run(current_command=local.mask(text, hidden))
        outcome = steps_in.run(
            text,
            log=logfile,
            timeout=step.timeout or job.settings.step_timeout,
            should_stop=job.should_stop,
            hidden=hidden,
            name=runner.container_name(job.run_id, index, number),
        )
        if full := job.full or _over_quota(job.settings, plan.owner.name):
            return _fail(job, index, f"step {step.name!r}: {full}")
        if outcome.stopped:
            job.update_step(index, status=STOPPED, finished_at=utcnow())
            job.update_run(status=STOPPED, finished_at=utcnow(), current_command=None)
            return STOPPED
        if outcome.exit_code != 0:
            why = "timed out" if outcome.timed_out else f"exit code {outcome.exit_code}"
            error = f"step {step.name!r} failed ({why}): {outcome.stderr_tail}".strip()
            return _fail(job, index, error, outcome.exit_code)
    job.update_step(index, status=FINISHED, finished_at=utcnow(), exit_code=0)
    job.update_run(steps_done=index + 1)
    return None


def _fail(job: _Execution, index: int, error: str, exit_code: int | None = None) -> str:
    """A step failed, and with it the run."""
    job.update_step(index, status=FAILED, finished_at=utcnow(), exit_code=exit_code)
    values: dict[str, Any] = {"status": FAILED, "finished_at": utcnow(), "error": error}
    if exit_code is not None:
        values["exit_code"] = exit_code
    job.update_run(**values)
    return FAILED


def _over_quota(settings: Settings, owner: str) -> str | None:
    """Why the owner's workspaces are past their quota, if they are."""
    if not settings.workspace_quota:
        return None
    try:
        workspace.require_space(settings.home, owner, 0, quota=settings.workspace_quota)
    except QuotaExceeded as exc:
        return exc.message
    return None


def _stage_out(job: _Execution, plan: _Plan, staged: list[staging.Staged]) -> str:
    """Publish the declared outputs with their provenance; the run's last status."""
    outputs = plan.spec.rucio_outputs
    if outputs:
        job.update_run(current_step="stage-out", current_command=None)
        try:
            staging.stage_out(
                job.sessions,
                plan.owner,
                plan.ws,
                outputs,
                staging.provenance(plan.label, plan.digest, staged),
                plan.label,
                configured=job.settings.rucio_instances_file(),
            )
        except VREError as exc:
            job.update_run(status=FAILED, finished_at=utcnow(), error=f"stage-out: {exc.message}")
            return FAILED
    job.update_run(status=FINISHED, finished_at=utcnow(), current_step=None, current_command=None)
    return FINISHED


def execute_safely(sessions: sessionmaker[Session], run_id: int, settings: Settings) -> str:
    """Like ``execute``, but an internal error fails the run and its running step instead
    of leaving them running; the message names no server path (the worker's log has it)."""
    with transaction(sessions) as session:
        claimed_as = session.scalar(select(Run.worker).where(Run.id == run_id)) or ""
    try:
        return execute(sessions, run_id, settings)
    except Exception as exc:
        log.exception("run %s failed inside the VRE", run_id)
        held = runs.lease(claimed_as, settings.run_lease).held_where([run_id])
        error = (
            f"internal error in the VRE ({type(exc).__name__});"
            " the operator's worker log has the details"
        )
        with transaction(sessions) as session:
            failed = session.execute(  # unless the run ended or went to another claim meanwhile
                update(Run).where(*held).values(status=FAILED, finished_at=utcnow(), error=error)
            ).rowcount  # type: ignore[attr-defined]
            if failed:
                session.execute(
                    update(RunStep)
                    .where(RunStep.run_id == run_id, RunStep.status == RUNNING)
                    .values(status=FAILED, finished_at=utcnow())
                )
        return FAILED
