"""The sweep of interrupted uploads: it finishes what was registered, removes the rest.

The process "dies" at chosen points (an exception nothing catches past that point);
then the worker's ``sweep_pending`` runs as it would an hour later.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from vre.db import transaction, utcnow
from vre.errors import StorageError
from vre.identity.models import Account
from vre.lake import rses, scopes, storage, upload
from vre.lake.models import DID, PendingUpload, Replica
from vre.lake.names import deterministic_path


@pytest.fixture
def disk(sessions: sessionmaker[Session], root: Account, alice: Account, tmp_path: Path) -> Path:
    with transaction(sessions) as session:
        rses.add(session, root, "DISK-A", (tmp_path / "a").as_uri())
        scopes.add(session, alice, "user.alice")
    return tmp_path / "a"


class Crash(BaseException):
    """The process dies here (nothing after it runs)."""


def crash(_: object) -> None:
    raise Crash()


def age_pending(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        session.execute(update(PendingUpload).values(created_at=utcnow() - timedelta(hours=2)))


def test_a_registered_upload_that_died_before_its_move_is_finished(
    sessions: sessionmaker[Session], alice: Account, disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = b"G" * 1000
    path = deterministic_path("user.alice", "N")
    with transaction(sessions) as session:  # a slower upload of the same name, half-written
        slow = PendingUpload(rse_id=rses.get(session, "DISK-A").id, path=path, account_id=alice.id)
        session.add(slow)
        session.flush()
        slow_id = slow.id
    url = storage.join(disk.as_uri(), path)
    storage.write_part(url, [good[:300]], tag=str(slow_id))
    monkeypatch.setattr(upload._Target, "commit", crash)  # registered, then the server died
    with pytest.raises(Crash):
        upload.upload(sessions, alice, "user.alice", "N", "DISK-A", [good])
    monkeypatch.undo()
    age_pending(sessions)
    assert upload.sweep_pending(sessions, timedelta(hours=1)) == 2
    assert Path(str(storage.local_path(url))).read_bytes() == good  # not the slow one's part
    assert sorted(p.name for p in disk.rglob("*") if p.is_file()) == [Path(path).name]
    with transaction(sessions) as session:
        assert session.scalar(select(func.count()).select_from(PendingUpload)) == 0
        did = session.scalars(select(DID).where(DID.name == "N")).one()
        assert session.get(Replica, (did.id, 1)).state == "available"  # type: ignore[union-attr]


def test_an_upload_that_outlived_the_grace_registers_nothing(
    sessions: sessionmaker[Session], alice: Account, disk: Path
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"x" * 500
        upload.sweep_pending(sessions, timedelta(0))  # the worker gives up on it now
        yield b"y" * 500

    with pytest.raises(StorageError, match="VRE_UPLOAD_GRACE"):
        upload.upload(sessions, alice, "user.alice", "S", "DISK-A", chunks())
    with transaction(sessions) as session:
        assert session.scalar(select(DID).where(DID.name == "S")) is None
        assert session.scalar(select(func.count()).select_from(PendingUpload)) == 0
    assert [p for p in disk.rglob("*") if p.is_file()] == []
