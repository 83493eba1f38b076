"""``vre worker``: the daemons that turn database state into work.

- transfers: claim due requests, copy them on a thread pool, report back per batch;
- rules: evaluate rules over collections that changed, expire rules past lifetime;
- reaper: delete replicas no lock holds once the grace period has passed;
- uploads: remove the bytes of uploads whose writer died.
Everything is state in the database, so a killed worker loses nothing and more
workers scale out (PostgreSQL; SQLite runs one worker).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from vre import leases
from vre.config import Settings
from vre.db import make_engine, make_sessionmaker, migrate, transaction
from vre.lake import reaper, rules, transfers
from vre.lake.upload import sweep_pending
from vre.workflows import engines, leftovers, retention, runs
from vre.workflows.backends import runner

log = logging.getLogger("vre.worker")
CONTAINER_CHECK = 60.0  # seconds between looks for containers of runs that ended


class Worker:
    def __init__(self, settings: Settings, *, tool: transfers.TransferTool | None = None) -> None:
        self.settings = settings
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.tool = tool or transfers.StreamingTool()
        self._stop = threading.Event()
        self._containers_checked = 0.0
        self.retry = transfers.Retry(settings.transfer_attempts, settings.transfer_backoff)

    # --- one round of each daemon ----------------------------------------------------
    def transfer_batch(self, sessions: sessionmaker[Session], pool: ThreadPoolExecutor) -> int:
        s = self.settings
        held = transfers.lease(self.name, s.transfer_lease)
        with transaction(sessions) as session:
            jobs = transfers.claim(session, held, s.transfer_batch)
        if not jobs:
            return 0
        log.debug("claimed transfers %s", ",".join(str(j.id) for j in jobs))
        with leases.held(sessions, held, [j.id for j in jobs]):
            outcomes = list(pool.map(self.tool.copy, jobs))
        transfers.report(sessions, held, outcomes, self.retry)
        failed = [o for o in outcomes if not o.done]
        for out in failed:
            log.warning("transfer %s of %s failed: %s", out.job.id, out.job.did, out.error)
        log.info("transfers: %d done, %d failed", len(outcomes) - len(failed), len(failed))
        return len(jobs)

    def _rules_round(self, sessions: sessionmaker[Session]) -> int:
        """Each kind of rule work in a transaction of its own: one holding the rows and
        RSEs of several kinds at once could deadlock with another worker's round."""
        while True:
            with transaction(sessions) as session:
                if not rules.process_updates(session):
                    break
        with transaction(sessions) as session:
            expired = rules.expire(session)
        with transaction(sessions) as session:
            rules.retry_stuck(session)
        return expired

    def _reap(self, sessions: sessionmaker[Session]) -> int:
        s = self.settings
        retry = timedelta(seconds=s.reaper_retry)
        return len(reaper.reap(sessions, timedelta(seconds=s.reaper_grace), retry=retry))

    def housekeeping(self, sessions: sessionmaker[Session]) -> None:
        """Every round of upkeep; each fails on its own, and the others still run."""
        expired = self._guarded("rules", self._rules_round, sessions)
        if expired:
            log.info("rules: %d expired", expired)
        gone = self._guarded("reaper", self._reap, sessions)
        if gone:
            log.info("reaper: deleted %d replica(s)", gone)
        upload_grace = timedelta(seconds=self.settings.upload_grace)
        swept = self._guarded("upload sweep", sweep_pending, sessions, upload_grace)
        if swept:
            log.info("removed the bytes of %d interrupted upload(s)", swept)
        retained = self._guarded("retention", retention.apply_due, sessions)
        if retained:
            log.info("retention rules removed %d workspace file(s)", retained)
        if time.monotonic() - self._containers_checked > CONTAINER_CHECK:
            self._containers_checked = time.monotonic()
            orphans = self._guarded("container cleanup", self.remove_orphans, sessions)
            if orphans:
                log.info("removed %d container(s) of runs no worker executes", orphans)
            swept = self._guarded("leftover sweep", self.sweep_leftovers, sessions)
            if swept:
                log.info("removed %d secret or credential directory(ies) left behind", swept)

    def _executing(self, sessions: sessionmaker[Session]) -> Callable[[set[int]], dict[int, str]]:
        def executing(ids: set[int]) -> dict[int, str]:
            with transaction(sessions) as session:
                return runs.executing(session, ids)

        return executing

    def remove_orphans(self, sessions: sessionmaker[Session]) -> int:
        return runner.remove_orphans(self.settings, self._executing(sessions))

    def sweep_leftovers(self, sessions: sessionmaker[Session]) -> int:
        return leftovers.sweep(self.settings, self._executing(sessions))

    # --- loops ---------------------------------------------------------------------------
    def _guarded(self, what: str, func: Callable[..., Any], *args: Any) -> int:
        try:
            return int(func(*args) or 0)
        except Exception:  # a bad round must not kill the daemon
            log.exception("%s round failed", what)
            return 0

    def _transfer_loop(self, sessions: sessionmaker[Session]) -> None:
        with ThreadPoolExecutor(self.settings.transfer_threads, "vre-transfer") as pool:
            while not self._stop.is_set():
                if not self._guarded("transfer", self.transfer_batch, sessions, pool):
                    self._stop.wait(min(self.settings.worker_interval, 0.5))

    def _runs_once(self, sessions: sessionmaker[Session]) -> None:
        """Every queued run, one after the other (``vre worker --once``)."""
        s = self.settings
        held = runs.lease(self.name, s.run_lease)
        while True:
            with transaction(sessions) as session:
                taken = runs.claim(session, held, s.max_runs_per_account, 1)
            if not taken:
                return
            engines.execute(sessions, taken[0], s)

    def _run_loop(self, sessions: sessionmaker[Session]) -> None:
        """Workflow runs: claim queued ones (per-account limit) and execute each on a thread."""
        s = self.settings
        held = runs.lease(self.name, s.run_lease)
        with ThreadPoolExecutor(s.run_threads, "vre-run") as pool:
            busy: set[Any] = set()
            while not self._stop.is_set():
                busy = {f for f in busy if not f.done()}
                free = s.run_threads - len(busy)
                taken: list[int] = []
                if free > 0:
                    try:
                        with transaction(sessions) as session:
                            taken = runs.claim(session, held, s.max_runs_per_account, free)
                    except Exception:
                        log.exception("claiming runs failed")
                for run_id in taken:
                    busy.add(pool.submit(engines.execute, sessions, run_id, s))
                if not taken:
                    self._stop.wait(s.run_poll)

    def run(self, *, once: bool = False) -> None:
        engine = make_engine(self.settings.resolved_database_url())
        migrate(engine)
        sessions = make_sessionmaker(engine)
        log.info("worker %s started", self.name)
        if once:
            self._guarded("housekeeping", self.housekeeping, sessions)
            with ThreadPoolExecutor(self.settings.transfer_threads) as pool:
                while self._guarded("transfer", self.transfer_batch, sessions, pool):
                    pass
            self._runs_once(sessions)
            self._guarded("housekeeping", self.housekeeping, sessions)
        else:
            mover = threading.Thread(target=self._transfer_loop, args=(sessions,), daemon=True)
            mover.start()
            runner = threading.Thread(target=self._run_loop, args=(sessions,), daemon=True)
            runner.start()
            while True:
                self._guarded("housekeeping", self.housekeeping, sessions)
                if self._stop.wait(self.settings.worker_interval):
                    break
            mover.join(timeout=60)
            runner.join(timeout=60)
        engine.dispose()
        log.info("worker %s stopped", self.name)

    def stop(self) -> None:
        self._stop.set()
