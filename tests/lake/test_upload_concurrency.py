"""Two uploads into different scopes on one RSE at once, PostgreSQL."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from vre.db import transaction
from vre.lake import rses, rules, scopes, upload

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def _setup(sessions, root, alice, bob, tmp_path):
    with transaction(sessions) as session:
        rses.add(session, root, "DISK-A", (tmp_path / "a").as_uri())
        scopes.add(session, alice, "user.alice")
        scopes.add(session, bob, "user.bob")


def _race(sessions, alice, bob):
    start = threading.Barrier(2)
    results: list[Any] = [None, None]

    def one(i, who, scope):
        start.wait()
        try:
            upload.upload(sessions, who, scope, "f", "DISK-A", [b"x" * 100 + bytes([i])])
            results[i] = "ok"
        except Exception as exc:
            results[i] = exc

    ts = [
        threading.Thread(target=one, args=(0, alice, "user.alice")),
        threading.Thread(target=one, args=(1, bob, "user.bob")),
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return results


def test_two_uploads_into_two_scopes_on_one_rse_do_not_deadlock(
    sessions, root, alice, bob, tmp_path, monkeypatch
):
    _setup(sessions, root, alice, bob, tmp_path)
    real = rules.add

    def slow_add(*a, **k):
        time.sleep(0.5)  # both register transactions have inserted their replica rows
        return real(*a, **k)

    monkeypatch.setattr(rules, "add", slow_add)
    results = _race(sessions, alice, bob)
    assert results == ["ok", "ok"], results


def test_many_concurrent_uploads_into_two_scopes_all_succeed(sessions, root, alice, bob, tmp_path):
    _setup(sessions, root, alice, bob, tmp_path)
    errors = []
    n = 40
    start = threading.Barrier(2)

    def loop(who, scope):
        start.wait()
        for i in range(n):
            try:
                upload.upload(
                    sessions, who, scope, f"f{i}", "DISK-A", [scope.encode() + bytes([i])]
                )
            except Exception as exc:
                errors.append(type(exc).__name__ + ": " + str(exc).splitlines()[0])

    ts = [
        threading.Thread(target=loop, args=(alice, "user.alice")),
        threading.Thread(target=loop, args=(bob, "user.bob")),
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors
