"""Claims and leases on real databases: one worker's rows are not another's."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from vre import leases
from vre.config import Settings
from vre.db import transaction, utcnow
from vre.identity.models import Account
from vre.workflows import engines, runs
from vre.workflows.models import FAILED, QUEUED, RUNNING, STOPPED, Run

LONG = """version: 0.9.0
workflow:
  type: serial
  specification:
    steps:
      - name: wait
        environment: bash
        commands: [sleep 30]
"""


def queue(sessions: sessionmaker[Session], actor: Account, home: Path, n: int) -> None:
    with transaction(sessions) as session:
        for i in range(n):
            runs.create(session, actor, f"r{i}", LONG, home)
        for i in range(n):
            runs.start(session, actor, f"r{i}.1")


def test_two_workers_never_take_the_same_row(
    sessions: sessionmaker[Session], alice: Account, tmp_path: Path
) -> None:
    queue(sessions, alice, tmp_path, 4)
    one, two = runs.lease("one", 60), runs.lease("two", 60)
    with transaction(sessions) as session:
        first = runs.claim(session, one, 10, 3)
    with transaction(sessions) as session:
        second = runs.claim(session, two, 10, 3)
    assert len(first) == 3 and len(second) == 1 and not set(first) & set(second)
    with transaction(sessions) as session:
        assert one.holds(session, first + second) == set(first)
        assert one.renew(session, first + second) == set(second)  # not ours: "lost"


def test_a_lease_that_ran_out_is_taken_over_and_lost_by_its_first_holder(
    sessions: sessionmaker[Session], alice: Account, tmp_path: Path
) -> None:
    queue(sessions, alice, tmp_path, 1)
    dead, alive = runs.lease("dead", 60), runs.lease("alive", 60)
    with transaction(sessions) as session:
        (run_id,) = runs.claim(session, dead, 10, 1)
        session.execute(update(Run).values(lease_until=utcnow() - timedelta(seconds=1)))
    with transaction(sessions) as session:  # the orphan fails; a restart queues it again
        assert runs.claim(session, alive, 10, 1) == []
        assert session.scalar(select(Run.status)) == FAILED
        session.execute(update(Run).values(status=QUEUED))
    with transaction(sessions) as session:
        assert runs.claim(session, alive, 10, 1) == [run_id]
    with transaction(sessions) as session:
        assert dead.renew(session, [run_id]) == {run_id}
        assert alive.renew(session, [run_id]) == set()


def test_the_heartbeat_renews_and_notices_a_lost_lease(
    sessions: sessionmaker[Session], alice: Account, tmp_path: Path
) -> None:
    queue(sessions, alice, tmp_path, 1)
    held = runs.lease("me", 0.6)
    with transaction(sessions) as session:
        (run_id,) = runs.claim(session, held, 10, 1)
        first = session.scalar(select(Run.lease_until))
    with leases.held(sessions, held, [run_id]) as heart:
        time.sleep(0.5)
        with transaction(sessions) as session:
            assert session.scalar(select(Run.lease_until)) > first  # renewed
            session.execute(update(Run).values(worker="someone-else"))
        deadline = time.monotonic() + 5
        while run_id not in heart.lost and time.monotonic() < deadline:
            time.sleep(0.05)
    assert heart.lost == {run_id}


def test_a_run_whose_lease_is_lost_stops_and_writes_nothing_more(
    sessions: sessionmaker[Session], alice: Account, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home", run_lease=0.6, step_timeout=60)
    queue(sessions, alice, settings.home, 1)
    held = runs.lease("me", settings.run_lease)
    with transaction(sessions) as session:
        (run_id,) = runs.claim(session, held, 10, 1)
    outcome: list[str] = []
    thread = threading.Thread(
        target=lambda: outcome.append(engines.execute(sessions, run_id, settings))
    )
    started = time.monotonic()
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with transaction(sessions) as session:
            if session.scalar(select(Run.current_command)) == "sleep 30":
                break
        time.sleep(0.05)
    with transaction(sessions) as session:  # another worker has it now
        session.execute(update(Run).values(worker="other", current_command="theirs"))
    thread.join(timeout=20)
    assert outcome == [STOPPED] and time.monotonic() - started < 15  # not the 30 s sleep
    with transaction(sessions) as session:
        run = session.scalars(select(Run)).one()
    assert (run.status, run.worker, run.current_command) == (RUNNING, "other", "theirs")
