"""Writer signatures on repository objects: domain separation and the refusal reasons."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifeboat.crypto.keys import RecoveryKey
from lifeboat.crypto.signed import (
    SIGNATURE_SIZE,
    Candidate,
    ObjectType,
    TimeVerdict,
    candidates_of,
    judge_time,
    resolve_name,
    side_by_side_name,
    sign_by_root,
    sign_object,
    statement,
    verify_by_root,
    verify_object,
)
from lifeboat.crypto.writers import (
    Authorisation,
    Refusal,
    Registry,
    RootKey,
    WriterKey,
    issue_writer,
    revoke_writer,
)
from lifeboat.errors import IntegrityError
from tests.crypto.conftest import REPO_ID

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATER = T0 + timedelta(hours=1)
HEADER = b"\x9e encrypted snapshot header bytes"
NAME = "snapshots/" + "a" * 64


@pytest.fixture
def two_writers(root: RootKey) -> tuple[WriterKey, WriterKey, Registry]:
    db, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    media, signed = issue_writer(root, "media1", ["photos"], signed, at=T0)
    return db, media, signed.verify(root.public, REPO_ID)


def test_signed_snapshot_verifies_and_names_its_writer(
    two_writers: tuple[WriterKey, WriterKey, Registry],
) -> None:
    db, _, registry = two_writers
    sig = sign_object(db, ObjectType.SNAPSHOT, NAME, "maindb", HEADER).to_bytes()
    assert len(sig) == SIGNATURE_SIZE
    verdict = verify_object(registry, ObjectType.SNAPSHOT, NAME, "maindb", HEADER, sig, LATER)
    assert verdict and verdict.writer == "db1"


def test_forged_snapshot_of_another_writers_asset_is_refused(
    two_writers: tuple[WriterKey, WriterKey, Registry],
) -> None:
    _, media, registry = two_writers
    sig = sign_object(media, ObjectType.SNAPSHOT, NAME, "maindb", HEADER).to_bytes()
    verdict = verify_object(registry, ObjectType.SNAPSHOT, NAME, "maindb", HEADER, sig, LATER)
    assert (verdict.writer, verdict.refusal) == ("media1", Refusal.ASSET_NOT_ALLOWED)


def test_unregistered_writer_is_refused(
    root: RootKey, two_writers: tuple[WriterKey, WriterKey, Registry]
) -> None:
    _, _, registry = two_writers
    outsider, _ = issue_writer(root, "db1", ["maindb"], at=T0)  # registered in no stored version
    sig = sign_object(outsider, ObjectType.SNAPSHOT, NAME, "maindb", HEADER).to_bytes()
    verdict = verify_object(registry, ObjectType.SNAPSHOT, NAME, "maindb", HEADER, sig, LATER)
    assert verdict.refusal is Refusal.UNKNOWN_WRITER and verdict.writer is None


def test_revoked_writer_is_refused_with_its_name(root: RootKey) -> None:
    db, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    registry = revoke_writer(root, signed, "db1", T0 + timedelta(minutes=30)).verify(root.public)
    sig = sign_object(db, ObjectType.SNAPSHOT, NAME, "maindb", HEADER).to_bytes()
    verdict = verify_object(registry, ObjectType.SNAPSHOT, NAME, "maindb", HEADER, sig, LATER)
    assert (verdict.writer, verdict.reason) == ("db1", "writer revoked")


@pytest.mark.parametrize(
    ("obj_type", "name", "asset", "content"),
    [
        (ObjectType.SNAPSHOT, "snapshots/" + "b" * 64, "maindb", HEADER),  # replayed under a new name
        (ObjectType.INDEX, NAME, "maindb", HEADER),  # another object type
        (ObjectType.SNAPSHOT, NAME, "wal", HEADER),  # another asset
        (ObjectType.SNAPSHOT, NAME, None, HEADER),  # asset dropped
        (ObjectType.SNAPSHOT, NAME, "maindb", HEADER + b"\x00"),  # other content
    ],
)
def test_signature_cannot_be_replayed_in_another_context(
    root: RootKey, obj_type: ObjectType, name: str, asset: str | None, content: bytes
) -> None:
    db, signed = issue_writer(root, "db1", ["maindb", "wal"], at=T0)
    registry = signed.verify(root.public)
    sig = sign_object(db, ObjectType.SNAPSHOT, NAME, "maindb", HEADER).to_bytes()
    verdict = verify_object(registry, obj_type, name, asset, content, sig, LATER)
    assert (verdict.writer, verdict.refusal) == ("db1", Refusal.BAD_SIGNATURE)


def test_signature_made_for_another_repository_is_refused(recovery: RecoveryKey) -> None:
    here = RootKey.derive(REPO_ID, recovery.secret, recovery.public)
    there = RootKey.derive("e" * 32, recovery.secret, recovery.public)
    key_there, _ = issue_writer(there, "db1", ["maindb"], at=T0)
    _, signed_here = issue_writer(here, "db1", ["maindb"], at=T0)
    # the same public key admitted here too (an operator re-using a writer key file elsewhere)
    registry = signed_here.verify(here.public)
    registry = replace(registry, writers=(replace(registry.writers[0], public=key_there.public),))
    sig = sign_object(key_there, ObjectType.SNAPSHOT, NAME, "maindb", HEADER).to_bytes()
    verdict = verify_object(registry, ObjectType.SNAPSHOT, NAME, "maindb", HEADER, sig, LATER)
    assert verdict.refusal is Refusal.BAD_SIGNATURE


def test_unsigned_and_malformed_are_refused(two_writers: tuple[WriterKey, WriterKey, Registry]) -> None:
    db, _, registry = two_writers
    unsigned = verify_object(registry, ObjectType.REF, "refs/wal/x", "maindb", HEADER, None, LATER)
    assert unsigned.refusal is Refusal.UNSIGNED
    sig = sign_object(db, ObjectType.REF, "refs/wal/x", "maindb", HEADER).to_bytes()
    for bad in (sig[:-1], b"XXXX" + sig[4:], sig[:4] + b"\x02" + sig[5:]):
        verdict = verify_object(registry, ObjectType.REF, "refs/wal/x", "maindb", HEADER, bad, LATER)
        assert verdict.refusal is Refusal.MALFORMED


def test_time_rule() -> None:
    now = T0
    assert judge_time(now + timedelta(minutes=4), now) is TimeVerdict.OK
    assert judge_time(now + timedelta(minutes=6), now) is TimeVerdict.FUTURE
    assert judge_time(datetime(2099, 1, 1, tzinfo=UTC), now) is TimeVerdict.FUTURE
    stored = now - timedelta(hours=1)
    assert judge_time(stored - timedelta(minutes=4), now, stored) is TimeVerdict.OK
    assert judge_time(stored - timedelta(days=3), now, stored) is TimeVerdict.BACKDATED
    assert judge_time(now + timedelta(minutes=2), now, storage_time=now, skew=timedelta(minutes=1)) is (
        TimeVerdict.FUTURE
    )


def _candidate(key: str, content: bytes, verdict: Authorisation) -> Candidate:
    return Candidate(key, hashlib.sha256(content).digest(), verdict)


def test_squatter_never_blocks_the_authorised_wal_segment() -> None:
    squat = _candidate("refs/wal/db/0001", b"junk", Authorisation("media1", Refusal.ASSET_NOT_ALLOWED))
    real = _candidate("refs/wal/db/0001~db1", b"wal", Authorisation("db1"))
    resolution = resolve_name("refs/wal/db/0001", [squat, real])
    assert resolution.chosen == real
    assert resolution.squatters == (squat,)
    assert resolve_name("refs/wal/db/0001", [squat]).chosen is None


def test_two_authorised_different_segments_fail_loudly() -> None:
    one = _candidate("refs/wal/db/0001", b"wal-a", Authorisation("db1"))
    two = _candidate("refs/wal/db/0001~db2", b"wal-b", Authorisation("db2"))
    with pytest.raises(IntegrityError, match=r"different content by authorised writers \(db1, db2\)"):
        resolve_name("refs/wal/db/0001", [one, two])
    same = _candidate("refs/wal/db/0001~db2", b"wal-a", Authorisation("db2"))
    assert resolve_name("refs/wal/db/0001", [one, same]).chosen == one


def test_root_signed_record_verifies_and_a_planted_one_is_refused(root: RootKey) -> None:
    record = b'{"public": "drill key", "fingerprint": "sha256:..."}'
    name = "records/drill-key.json"
    sig = sign_by_root(root, ObjectType.RECORD, name, record).to_bytes()
    verify_by_root(root.public, REPO_ID, ObjectType.RECORD, name, record, sig)
    writer, _ = issue_writer(root, "db1", ["maindb"], at=T0)
    planted = sign_object(writer, ObjectType.RECORD, name, None, record).to_bytes()
    with pytest.raises(IntegrityError, match="another key than the repository's root key"):
        verify_by_root(root.public, REPO_ID, ObjectType.RECORD, name, record, planted)
    with pytest.raises(IntegrityError, match="not signed"):
        verify_by_root(root.public, REPO_ID, ObjectType.RECORD, name, record, None)
    with pytest.raises(IntegrityError, match="modified or renamed"):
        verify_by_root(root.public, REPO_ID, ObjectType.RECORD, "records/escrow.json", record, sig)


_text = st.text(alphabet="ab/\x00", max_size=4)


@given(
    st.tuples(st.sampled_from(list(ObjectType)), _text, _text, st.none() | _text, st.binary(max_size=3)),
    st.tuples(st.sampled_from(list(ObjectType)), _text, _text, st.none() | _text, st.binary(max_size=3)),
)
def test_statements_of_different_contexts_never_collide(
    one: tuple[ObjectType, str, str, str | None, bytes], two: tuple[ObjectType, str, str, str | None, bytes]
) -> None:
    # tiny alphabets make shifted boundaries ("a"+"b/" vs "ab"+"/") likely to be tried
    assert (statement(*one) == statement(*two)) == (one == two)


def test_side_by_side_names_are_unpredictable_and_found_by_listing() -> None:
    base = "refs/wal/maindb/000000010000000000000003"
    first, second = side_by_side_name(base), side_by_side_name(base)
    assert first != second and first.startswith(base + "~")
    listed = [
        base,
        first,
        second,
        base + "~" + "z" * 16,
        base + "4",
        base + ".partial.1700000000000",
        "refs/wal/maindb/x",
    ]
    assert candidates_of(base, listed) == [base, first, second]
