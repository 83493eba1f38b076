"""One read rule everywhere, and one quota check for every replica and lock.

The attack (issue 14): alice attaches a file of her private scope to a public dataset;
bob then listed it with its URLs (``/replicas``), staged it into his run and made his
rules copy it, while ``/files`` refused it. Here every way of reaching it shows bob
nothing of it, refuses a run that would stage it, and keeps it out of his rules.

The quota attack: a bulk registration recorded a 1 TB replica on an RSE whose quota was
10 bytes. Registration now charges its replicas like an upload does (a rule and a lock
of the registrant each), so neither one large batch nor many small ones get past it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from vre.db import transaction
from vre.errors import Forbidden, NotFound, QuotaExceeded
from vre.identity.models import Account
from vre.lake import (
    catalogue,
    meta,
    quotas,
    replicas,
    rses,
    rule_views,
    rules,
    scopes,
    transfers,
    upload,
)
from vre.lake.models import DID, Attachment, DIDMeta, Replica
from vre.lake.replicas import FileEntry
from vre.lake.rule_models import Lock, Rule, Transfer, Usage
from vre.workflows import staging
from vre.workflows.spec import RucioInput

PUB, PRIV = "pub", "user.alice"


@pytest.fixture
def shared(
    sessions: sessionmaker[Session],
    root: Account,
    alice: Account,
    alice_scope: str,
    local_rse: Path,
    tmp_path: Path,
) -> None:
    """alice's public dataset ``pub:ds`` holds ``pub:open.dat`` and her private
    ``user.alice:secret.dat``; the public container ``pub:ct`` holds ``pub:ds`` and her
    private dataset ``user.alice:hidden``, which holds the public ``pub:also.dat``."""
    with transaction(sessions) as session:
        scopes.add(session, alice, PUB, public=True)
        rses.add(session, root, "OTHER-DISK", (tmp_path / "other").as_uri())
    for scope, name, data in (
        (PUB, "open.dat", b"open data"),
        (PRIV, "secret.dat", b"alice's secret"),
        (PUB, "also.dat", b"public, only in a private dataset"),
    ):
        upload.upload(sessions, alice, scope, name, "LOCAL-DISK", [data])
    with transaction(sessions) as session:
        meta.set_many(session, [catalogue.get(session, PRIV, "secret.dat").id], {"topic": "x"})
        catalogue.add_collection(session, alice, PUB, "ds", "dataset")
        catalogue.attach(session, alice, PUB, "ds", [(PUB, "open.dat"), (PRIV, "secret.dat")])
        catalogue.add_collection(session, alice, PRIV, "hidden", "dataset")
        catalogue.attach(session, alice, PRIV, "hidden", [(PUB, "also.dat")])
        catalogue.add_collection(session, alice, PUB, "ct", "container")
        catalogue.attach(session, alice, PUB, "ct", [(PUB, "ds"), (PRIV, "hidden")])


def names(items: list) -> list[str]:  # type: ignore[type-arg]
    return [f"{i.scope}:{i.name}" for i in items]


def test_replica_listings_show_only_readable_files(sessions, alice, bob, root, shared) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        for dids in ([(PUB, "ds")], [(PUB, "ct")], [(PUB, "ds"), (PUB, "ct")]):
            listed = replicas.list_for(session, bob, dids)
            assert names(listed) == ["pub:open.dat"]
            assert all("secret" not in r.url and "also" not in r.url for r in listed[0].replicas)
        everything = ["pub:also.dat", "pub:open.dat", "user.alice:secret.dat"]
        assert names(replicas.list_for(session, alice, [(PUB, "ct")])) == everything
        assert names(replicas.list_for(session, root, [(PUB, "ct")])) == everything
        with pytest.raises(Forbidden):  # named directly: its scope refuses, as /files does
            replicas.list_for(session, bob, [(PRIV, "secret.dat")])
        with pytest.raises(Forbidden):
            catalogue.readable(session, bob, PRIV, "secret.dat")


def test_collections_show_others_only_what_they_may_read(sessions, alice, bob, shared) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        ds, ct = catalogue.get(session, PUB, "ds"), catalogue.get(session, PUB, "ct")
        assert names(catalogue.contents_for(session, bob, ds)) == ["pub:open.dat"]
        assert names(catalogue.contents_for(session, bob, ct)) == ["pub:ds"]
        assert catalogue.lengths_for(session, bob, [ds.id, ct.id]) == {ds.id: 1, ct.id: 1}
        assert catalogue.lengths_for(session, alice, [ds.id, ct.id]) == {ds.id: 2, ct.id: 2}
        listed = catalogue.list_dids(session, bob, "pub:c*", recursive=True)
        assert names(listed) == ["pub:ct", "pub:ds", "pub:open.dat"]  # not via `hidden`
        everything = catalogue.list_dids(session, bob, "pub:*", recursive=True)
        assert names(everything) == ["pub:also.dat", "pub:ct", "pub:ds", "pub:open.dat"]
        assert names(catalogue.list_dids(session, alice, "pub:ct", recursive=True)) == [
            "pub:also.dat",
            "pub:ct",
            "pub:ds",
            "pub:open.dat",
            "user.alice:hidden",
            "user.alice:secret.dat",
        ]
        assert names(catalogue.list_dids(session, bob, "pub:*", filters="topic=x")) == []
        assert names(catalogue.files_for(session, bob, [ct])) == ["pub:open.dat"]


def test_a_run_staging_the_dataset_is_refused_by_count(  # type: ignore[no-untyped-def]
    sessions, alice, bob, shared, tmp_path
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    for name in ("ds", "ct"):
        wanted = [RucioInput("local", PUB, name)]
        with pytest.raises(Forbidden) as refused:
            staging.stage_in(sessions, bob, ws, wanted)
        message = refused.value.message
        assert f"pub:{name} holds" in message and "may not read" in message
        assert "secret" not in message and "also" not in message and "hidden" not in message
        with pytest.raises(Forbidden):
            staging.describe(sessions, bob, wanted)  # a restart's record refuses alike
    assert "2 file(s)" in message  # the container: secret.dat and also.dat
    assert not (ws / "inputs").exists()
    with pytest.raises(Forbidden):
        staging.stage_in(sessions, bob, ws, [RucioInput("local", PRIV, "secret.dat")])
    mine = staging.stage_in(sessions, bob, ws, [RucioInput("local", PUB, "open.dat")])
    assert [s.path for s in mine] == ["inputs/pub/open.dat"]
    assert not (ws / "inputs" / PRIV).exists()
    (tmp_path / "ws-alice").mkdir()
    theirs = staging.stage_in(
        sessions, alice, tmp_path / "ws-alice", [RucioInput("local", PUB, "ct")]
    )
    assert len(theirs) == 3  # the owner stages all of it


def test_another_accounts_rule_covers_only_what_it_may_read(sessions, alice, bob, shared) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        rule = rules.add(session, bob, PUB, "ct", "OTHER-DISK")
        rule_id = rule.id
    with transaction(sessions) as session:
        rule = rules.get(session, bob, rule_id)
        assert [lock["name"] for lock in rule_views.locks_of(session, rule)] == ["open.dat"]
        locked = session.scalars(
            select(DID.name).join(Lock, Lock.did_id == DID.id).where(Lock.rule_id == rule_id)
        )
        assert list(locked) == ["open.dat"]
        queued = session.scalars(select(DID.name).join(Transfer, Transfer.did_id == DID.id))
        assert list(queued) == ["open.dat"]
        assert [t.did for t in transfers.list_transfers(session, bob)] == ["pub:open.dat"]
    with transaction(sessions) as session:  # alice makes the dataset's scope private:
        scopes.set_public(session, alice, PUB, False)
        rules.evaluate(session, session.get(Rule, rule_id))  # type: ignore[arg-type]
    with transaction(sessions) as session:  # bob's rule lets go of what he cannot read now
        assert session.scalar(select(func.count()).where(Lock.rule_id == rule_id)) == 0


def _count(session: Session) -> tuple[int, ...]:
    return tuple(
        session.scalar(select(func.count()).select_from(m)) or 0
        for m in (DID, Replica, Attachment, DIDMeta, Rule, Lock)
    )


def _entry(name: str, size: int) -> FileEntry:
    return FileEntry(PRIV, name, size, "00000001", meta={"k": 1})


def test_bulk_registration_over_quota_records_nothing(  # type: ignore[no-untyped-def]
    sessions, alice, root, alice_scope, local_rse
) -> None:
    with transaction(sessions) as session:
        quotas.set_quota(session, root, "alice", "LOCAL-DISK", 10)
        catalogue.add_collection(session, alice, PRIV, "ds", "dataset")
        before = _count(session)
    with pytest.raises(QuotaExceeded) as refused, transaction(sessions) as session:
        replicas.register(
            session, alice, "LOCAL-DISK", [_entry("big", 10**12)], dataset=(PRIV, "ds")
        )
    assert "LOCAL-DISK" in refused.value.message and "limit 10 bytes" in refused.value.message
    with transaction(sessions) as session:
        assert _count(session) == before
        assert session.scalar(select(func.count()).select_from(Usage)) == 0
    # within the quota: registered, held by alice's rule, counted on her quota
    with transaction(sessions) as session:
        done = replicas.register(session, alice, "LOCAL-DISK", [_entry("a", 4), _entry("b", 4)])
    assert done == {"files": 2, "replicas": 2, "attached": 0}
    with transaction(sessions) as session:
        shown = {q.rse: q for q in quotas.show(session, alice)}
        assert (shown["LOCAL-DISK"].used, shown["LOCAL-DISK"].files) == (8, 2)
        held = session.execute(select(Replica.lock_count, Replica.tombstone)).all()
        assert held == [(1, None), (1, None)]
        kept = [r for r, *_ in rule_views.list_rules(session, alice) if r.comment == "register"]
        assert [(r.state, r.locks_ok, r.rse_expression) for r in kept] == [
            ("ok", 1, "LOCAL-DISK")
        ] * 2
        before = _count(session)
    # many small batches do not get past it either: the usage counts
    with pytest.raises(QuotaExceeded), transaction(sessions) as session:
        replicas.register(session, alice, "LOCAL-DISK", [_entry("c", 4)])
    with transaction(sessions) as session:
        assert _count(session) == before
        assert {q.rse: q.used for q in quotas.show(session, alice)} == {"LOCAL-DISK": 8}
        # the same files again on the same RSE: nothing new, nothing charged
        again = replicas.register(session, alice, "LOCAL-DISK", [_entry("a", 4)])
    assert again == {"files": 0, "replicas": 0, "attached": 0}


def test_a_registered_replica_outlives_a_rule_letting_go(  # type: ignore[no-untyped-def]
    sessions, alice, bob, root, alice_scope, local_rse
) -> None:
    """A registered replica used to be held by no lock: the first rule to release it
    tombstoned it, and the reaper would have deleted a file's only copy."""
    with transaction(sessions) as session:
        replicas.register(session, alice, "LOCAL-DISK", [_entry("only", 5)])
        rule = rules.add(session, root, PRIV, "only", "LOCAL-DISK")
        rule_id = rule.id
    with transaction(sessions) as session:
        rules.remove(session, root, rule_id)
    with transaction(sessions) as session:
        assert session.execute(select(Replica.lock_count, Replica.tombstone)).all() == [(1, None)]


def test_rules_and_uploads_over_quota_are_refused(  # type: ignore[no-untyped-def]
    sessions, alice, bob, root, shared
) -> None:
    with transaction(sessions) as session:
        quotas.set_quota(session, root, "bob", "OTHER-DISK", 3)
        quotas.set_quota(session, root, "alice", "OTHER-DISK", 3)
        quotas.set_quota(session, root, "root", "OTHER-DISK", 3)  # an admin's quota holds too
        before = _count(session)
    for who in (bob, root):
        refused = pytest.raises(QuotaExceeded, match="quota exceeded on OTHER-DISK")
        with refused, transaction(sessions) as session:
            rules.add(session, who, PUB, "ds", "OTHER-DISK")
    with pytest.raises(QuotaExceeded), transaction(sessions) as session:
        replicas.register(session, root, "OTHER-DISK", [FileEntry(PUB, "r", 4, "00000001")])
    with pytest.raises(QuotaExceeded):
        upload.upload(sessions, alice, PRIV, "too-big.dat", "OTHER-DISK", [b"1234"])
    with transaction(sessions) as session:
        assert _count(session) == before
        assert session.scalar(select(func.count()).select_from(Transfer)) == 0


def test_detach_does_not_tell_whether_a_private_did_exists(  # type: ignore[no-untyped-def]
    sessions, alice, bob, shared
) -> None:
    with transaction(sessions) as session:
        scopes.add(session, bob, "bobs", public=True)
        catalogue.add_collection(session, bob, "bobs", "mine", "dataset")
    answers = []
    for name in ("secret.dat", "no-such.dat"):
        with pytest.raises(NotFound) as refused, transaction(sessions) as session:
            catalogue.detach(session, bob, "bobs", "mine", [(PRIV, name)])
        answers.append(refused.value.message.replace(name, "X"))
    assert answers[0] == answers[1] == "user.alice:X is not attached to bobs:mine"
    with transaction(sessions) as session:  # attached while readable: still his to detach
        catalogue.attach(session, bob, "bobs", "mine", [(PUB, "open.dat")])
        scopes.set_public(session, alice, PUB, False)
    with transaction(sessions) as session:
        assert catalogue.detach(session, bob, "bobs", "mine", [(PUB, "open.dat")]) == 1
