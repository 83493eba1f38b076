"""SQLite: a transaction that decides on what it reads is a writer before it reads.

pysqlite begins a transaction at the first INSERT/UPDATE/DELETE only; a worker that
read replicas and quotas first could miss what an API request committed in between
(a replica's lock count then lags behind its locks, and the reaper deletes a copy a
rule still holds). The request is started in the middle of the worker's evaluation.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from vre.config import Settings
from vre.db import transaction
from vre.identity.models import Account
from vre.lake import catalogue, quotas, reaper, rses, rules, scopes, upload
from vre.lake.models import DATASET, Replica
from vre.lake.rule_models import Lock, Rule
from vre.worker import Worker

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_a_rule_added_while_the_worker_evaluates_waits_for_it(
    sessions: sessionmaker[Session],
    root: Account,
    alice: Account,
    bob: Account,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with transaction(sessions) as session:
        rses.add(session, root, "DISK-A", (tmp_path / "a").as_uri())
        rses.add(session, root, "DISK-B", (tmp_path / "b").as_uri())
        scopes.add(session, alice, "user.alice", public=True)
    upload.upload(sessions, alice, "user.alice", "f1", "DISK-A", [b"f1" * 50])
    with transaction(sessions) as session:
        catalogue.add_collection(session, alice, "user.alice", "D", DATASET)
        rules.add(session, alice, "user.alice", "D", "DISK-B")
        catalogue.attach(session, alice, "user.alice", "D", [("user.alice", "f1")])
    real = quotas.free
    api: list[threading.Thread] = []
    blocked: list[bool] = []

    def free(*args: Any, **kwargs: Any) -> dict[int, float]:
        answer = real(*args, **kwargs)
        if threading.current_thread().name == "worker" and not api:

            def add() -> None:
                with transaction(sessions) as s:
                    rules.add(s, bob, "user.alice", "f1", "DISK-B")

            api.append(threading.Thread(target=add))
            api[0].start()
            api[0].join(1.0)
            blocked.append(api[0].is_alive())  # it waits for the worker's commit
        return answer

    monkeypatch.setattr(quotas, "free", free)

    def evaluate() -> None:
        with transaction(sessions) as session:
            while rules.process_updates(session):
                pass

    worker = threading.Thread(target=evaluate, name="worker")
    worker.start()
    worker.join(60)
    api[0].join(60)
    assert blocked == [True]
    with transaction(sessions) as session:
        replica = session.scalars(select(Replica).where(Replica.rse_id == 2)).one()
        locks = session.scalar(select(func.count()).select_from(Lock).where(Lock.rse_id == 2))
        bobs = session.scalar(select(Rule.id).where(Rule.account_id == bob.id))
    assert replica.lock_count == locks == 2
    with ThreadPoolExecutor(2) as pool:
        Worker(Settings()).transfer_batch(sessions, pool)
    with transaction(sessions) as session:
        rules.remove(session, bob, bobs)
    assert reaper.reap(sessions, timedelta(0)) == []  # alice's rule still holds the copy
    with transaction(sessions) as session:
        assert (
            session.scalars(select(Replica).where(Replica.rse_id == 2)).one().state == "available"
        )
