"""Claims and leases on real databases: one worker's rows are not another's."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from vre import bulk, leases
from vre.config import Settings
from vre.db import transaction, utcnow
from vre.identity.models import Account
from vre.lake import rses, scopes, transfers
from vre.lake.models import DID, FILE
from vre.lake.rule_models import SUBMITTED, Transfer
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


def claimed_as(session: Session, run_id: int) -> str:
    return str(session.scalar(select(Run.worker).where(Run.id == run_id)))


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
        mine = runs.lease(claimed_as(session, first[0]), 60)  # the claim's own name
        assert mine.worker.startswith("one/") and claimed_as(session, second[0]).startswith("two/")
        assert mine.holds(session, first + second) == set(first)
        assert mine.renew(session, first + second) == set(second)  # not ours: "lost"
        assert one.holds(session, first) == set()  # the worker's bare name holds nothing


def test_a_lease_that_ran_out_is_taken_over_and_lost_by_its_first_holder(
    sessions: sessionmaker[Session], alice: Account, tmp_path: Path
) -> None:
    queue(sessions, alice, tmp_path, 1)
    dead, alive = runs.lease("dead", 60), runs.lease("alive", 60)
    with transaction(sessions) as session:
        (run_id,) = runs.claim(session, dead, 10, 1)
        dead = runs.lease(claimed_as(session, run_id), 60)
        session.execute(update(Run).values(lease_until=utcnow() - timedelta(seconds=1)))
    with transaction(sessions) as session:  # the orphan fails; a restart queues it again
        assert runs.claim(session, alive, 10, 1) == []
        assert session.scalar(select(Run.status)) == FAILED
        session.execute(update(Run).values(status=QUEUED))
    with transaction(sessions) as session:
        assert runs.claim(session, alive, 10, 1) == [run_id]
        alive = runs.lease(claimed_as(session, run_id), 60)
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
        held = runs.lease(claimed_as(session, run_id), 0.6)
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


def test_eight_workers_claiming_at_once_never_share_a_row(
    sessions: sessionmaker[Session], root: Account, alice: Account, tmp_path: Path
) -> None:
    """2,000 queued transfers, eight threads claiming seven at a time until none is left."""
    with transaction(sessions) as session:
        rses.add(session, root, "DISK-A", (tmp_path / "a").as_uri())
        scopes.add(session, alice, "user.alice")
        did = DID(scope="user.alice", name="f", type=FILE, account_id=alice.id, bytes=1)
        session.add(did)
        session.flush()
        now = utcnow()
        row = {"did_id": did.id, "rse_id": 1, "account_id": alice.id, "state": QUEUED}
        row |= {"attempts": 0, "bytes": 0, "next_attempt_at": now}
        row |= {"created_at": now, "updated_at": now}
        bulk.insert_rows(session, Transfer.__table__, [row] * 2000)
    got: list[list[int]] = []
    errors: list[Exception] = []
    start = threading.Barrier(8)

    def claim(i: int) -> None:
        held = transfers.lease(f"w{i}", 60)
        pick = select(Transfer.id).where(Transfer.state == QUEUED).order_by(Transfer.id).limit(7)
        start.wait()
        while True:
            try:
                with transaction(sessions) as session:
                    ids = held.take(session, pick, state=SUBMITTED)
            except Exception as exc:  # e.g. SQLite busy: counted, and the claim is retried
                errors.append(exc)
                continue
            if not ids:
                return
            got.append(ids)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    counts = Counter(i for ids in got for i in ids)
    assert len(counts) == 2000 and set(counts.values()) == {1}
    assert max(len(ids) for ids in got) <= 7 and errors == []
