"""A worker evaluating several rules and a request placing one lock their RSEs in one order
(PostgreSQL): they never deadlock.
"""

from __future__ import annotations

import threading
import time

import pytest

from vre.db import transaction
from vre.lake import catalogue, rses, rules, scopes, upload
from vre.lake.models import DATASET

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def test_evaluating_rules_and_adding_one_at_once_do_not_deadlock(
    sessions, root, alice, bob, tmp_path, monkeypatch
):
    with transaction(sessions) as session:
        rses.add(session, root, "DISK-A", (tmp_path / "a").as_uri())
        rses.add(session, root, "DISK-B", (tmp_path / "b").as_uri())
        scopes.add(session, alice, "user.alice", public=True)
    for n in ("f1", "f2"):
        upload.upload(sessions, alice, "user.alice", n, "DISK-A", [n.encode() * 50])
    with transaction(sessions) as session:
        catalogue.add_collection(session, alice, "user.alice", "D", DATASET)
        rules.add(session, alice, "user.alice", "D", "DISK-B")  # r: lower id, on B
        rules.add(session, alice, "user.alice", "D", "DISK-A")  # r: higher id, on A
    with transaction(sessions) as session:
        catalogue.attach(session, alice, "user.alice", "D", [("user.alice", "f1")])
    real = rules._hold_rses
    first_held = threading.Event()

    def hold(session, ids):
        real(session, ids)
        if threading.current_thread().name == "worker" and not first_held.is_set():
            first_held.set()
            time.sleep(1.0)

    monkeypatch.setattr(rules, "_hold_rses", hold)
    results = {}

    def worker():
        try:
            with transaction(sessions) as session:
                while rules.process_updates(session):
                    pass
            results["worker"] = "ok"
        except Exception as exc:
            results["worker"] = exc

    def api():
        first_held.wait(10)
        try:
            with transaction(sessions) as session:
                rules.add(session, bob, "user.alice", "f2", "DISK-A|DISK-B", copies=2)
            results["api"] = "ok"
        except Exception as exc:
            results["api"] = exc

    ts = [threading.Thread(target=worker, name="worker"), threading.Thread(target=api, name="api")]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert results == {"worker": "ok", "api": "ok"}


def test_two_workers_rule_rounds_at_once_do_not_deadlock(
    sessions, root, alice, tmp_path, monkeypatch
):
    """A stuck rule retried while collection updates touch its RSE, by two workers."""
    from vre.config import Settings
    from vre.lake import quotas
    from vre.lake.rule_models import Rule
    from vre.worker import Worker

    with transaction(sessions) as session:
        rses.add(session, root, "DISK-A", (tmp_path / "a").as_uri())
        rses.add(session, root, "DISK-B", (tmp_path / "b").as_uri())
        scopes.add(session, alice, "user.alice")
        quotas.set_quota(session, root, "alice", "DISK-B", 5)
        for name in ("ds1", "ds2"):
            catalogue.add_collection(session, alice, "user.alice", name, DATASET)
    upload.upload(sessions, alice, "user.alice", "big", "DISK-A", [b"x" * 100])
    upload.upload(sessions, alice, "user.alice", "small", "DISK-A", [b"y"])
    with transaction(sessions) as session:
        stuck = rules.add(session, alice, "user.alice", "ds1", "DISK-B").id
        rules.add(session, alice, "user.alice", "ds2", "DISK-B")
        catalogue.attach(session, alice, "user.alice", "ds1", [("user.alice", "big")])
    with transaction(sessions) as session:
        while rules.process_updates(session):
            pass
    with transaction(sessions) as session:
        assert session.get(Rule, stuck).error  # over quota
        catalogue.attach(session, alice, "user.alice", "ds2", [("user.alice", "small")])
    real = rules.expire
    first_done = threading.Event()

    def slow_expire(session):
        if threading.current_thread().name == "A":
            first_done.set()
            time.sleep(1.0)  # B retries the stuck rule now
        return real(session)

    monkeypatch.setattr(rules, "expire", slow_expire)
    errors = []

    def round_of(name):
        if name == "B":
            first_done.wait(10)
        try:
            Worker(Settings())._rules_round(sessions)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=round_of, args=(n,), name=n) for n in ("A", "B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
