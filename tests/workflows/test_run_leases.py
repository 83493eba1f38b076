"""A run whose lease was lost writes nothing more and is never executed twice."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from vre.config import Settings
from vre.db import transaction, utcnow
from vre.workflows import engines, runs
from vre.workflows.models import PENDING, QUEUED, Run

SPEC = """version: 0.9.0
workflow:
  type: serial
  specification:
    steps:
      - name: s
        environment: bash
        commands: ["echo start >> $VRE_WORKSPACE/trace; sleep 3; echo end >> $VRE_WORKSPACE/trace"]
"""


def _queue(sessions, alice, home):
    with transaction(sessions) as session:
        runs.create(session, alice, "r", SPEC, home)
        runs.start(session, alice, "r.1")


def _wait_running(sessions):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with transaction(sessions) as session:
            if (session.scalar(select(Run.current_command)) or "").startswith("echo start"):
                return
        time.sleep(0.05)
    raise AssertionError("never ran")


def test_lost_lease_still_writes(sessions, alice, tmp_path):
    settings = Settings(home=tmp_path / "home", run_lease=30, step_timeout=60)
    _queue(sessions, alice, settings.home)
    with transaction(sessions) as session:
        (run_id,) = runs.claim(session, runs.lease("A", settings.run_lease), 10, 1)
    out = []
    t = threading.Thread(target=lambda: out.append(engines.execute(sessions, run_id, settings)))
    t.start()
    _wait_running(sessions)
    # the run was reaped, restarted and taken by worker B (all allowed once A's lease ran out)
    with transaction(sessions) as session:
        session.execute(
            update(Run).values(
                status=PENDING,
                worker="B",
                current_command="B's",
                lease_until=utcnow() + timedelta(seconds=300),
            )
        )
    t.join(30)
    with transaction(sessions) as session:
        run = session.scalars(select(Run)).one()
    assert (run.status, run.current_command) == (PENDING, "B's")


def test_same_worker_reclaims_and_runs_twice(sessions, alice, tmp_path):
    settings = Settings(home=tmp_path / "home", run_lease=0.9, step_timeout=60)
    _queue(sessions, alice, settings.home)
    held = runs.lease("W", settings.run_lease)
    with transaction(sessions) as session:
        (run_id,) = runs.claim(session, held, 10, 1)
    out = []
    t1 = threading.Thread(target=lambda: out.append(engines.execute(sessions, run_id, settings)))
    t1.start()
    _wait_running(sessions)
    # W's lease runs out (say its heartbeat could not reach the database for a while):
    # a claim (W's own loop) fails the orphan, the user restarts it, W's loop takes it again.
    with transaction(sessions) as session:
        session.execute(update(Run).values(lease_until=utcnow() - timedelta(seconds=1)))
        assert runs.claim(session, held, 10, 1) == []
        session.execute(update(Run).values(status=QUEUED))
        assert runs.claim(session, held, 10, 1) == [run_id]
    t2 = threading.Thread(target=lambda: out.append(engines.execute(sessions, run_id, settings)))
    t2.start()
    t1.join(30)
    t2.join(30)
    with transaction(sessions) as session:
        ws = Path(session.scalar(select(Run.workspace)))
    trace = (ws / "trace").read_text().split()
    assert trace.count("end") <= 1, "the first execution kept going: the run executed twice"
