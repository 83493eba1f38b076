"""``vre worker``: background daemons over database state.

Issue by issue more daemons join (transfers, rules, the reaper); today it sweeps
uploads whose writer died, so their bytes never linger without a catalogue entry.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from vre.config import Settings
from vre.db import make_engine, make_sessionmaker, migrate
from vre.lake.upload import sweep_pending

log = logging.getLogger("vre.worker")


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        interval: float = 5.0,
        upload_grace: timedelta = timedelta(hours=1),
    ) -> None:
        self.settings = settings
        self.interval = interval
        self.upload_grace = upload_grace
        self._stop = threading.Event()

    def run_once(self, sessions: object) -> None:
        swept = sweep_pending(sessions, self.upload_grace)  # type: ignore[arg-type]
        if swept:
            log.info("removed the bytes of %d interrupted upload(s)", swept)

    def run(self) -> None:
        engine = make_engine(self.settings.resolved_database_url())
        migrate(engine)
        sessions = make_sessionmaker(engine)
        log.info("worker started")
        while True:
            try:
                self.run_once(sessions)
            except Exception:  # a bad round must not kill the daemon
                log.exception("worker round failed")
            if self._stop.wait(self.interval):
                break
        engine.dispose()
        log.info("worker stopped")

    def stop(self) -> None:
        self._stop.set()
