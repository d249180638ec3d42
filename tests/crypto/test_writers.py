"""Writer keys and the root-signed writer registry (issue #14)."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import blake3
import pytest

from lifeboat.crypto.keys import RecoveryKey
from lifeboat.crypto.writers import (
    Checkpoint,
    Refusal,
    RootKey,
    SignedRegistry,
    grant_assets,
    issue_writer,
    load_writer_key,
    revoke_writer,
    verify_chain,
    writer_id_key,
)
from lifeboat.errors import IntegrityError, KeyError_
from tests.crypto.conftest import REPO_ID

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_root_key_is_reproducible_from_the_recovery_secret_and_unique_per_repository(
    recovery: RecoveryKey, root: RootKey
) -> None:
    again = RootKey.derive(REPO_ID, recovery.secret, recovery.public)
    other_repo = RootKey.derive("f" * 32, recovery.secret, recovery.public)
    assert again.public == root.public
    assert other_repo.public != root.public


def test_issued_writer_is_authorised_for_its_assets_only(root: RootKey) -> None:
    key, signed = issue_writer(root, "db1", ["maindb", "wal"], at=T0)
    registry = signed.verify(root.public, REPO_ID)
    later = T0 + timedelta(hours=1)
    assert registry.authorises(key.public, "maindb", later)
    assert registry.authorises(key.public, "maindb", later).writer == "db1"
    refused = registry.authorises(key.public, "media", later)
    assert not refused
    assert (refused.writer, refused.refusal) == ("db1", Refusal.ASSET_NOT_ALLOWED)
    assert registry.authorises(key.public, None, later), "an index is not tied to one asset"


def test_unregistered_key_is_refused_with_reason(root: RootKey) -> None:
    _, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    stranger, _ = issue_writer(root, "db1", ["maindb"], at=T0)  # a key that never got registered
    verdict = signed.verify(root.public).authorises(stranger.public, "maindb", T0 + timedelta(1))
    assert (verdict.writer, verdict.refusal) == (None, Refusal.UNKNOWN_WRITER)
    assert verdict.reason == "writer not in the registry"


def test_object_dated_before_issue_is_refused(root: RootKey) -> None:
    key, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    verdict = signed.verify(root.public).authorises(key.public, "maindb", T0 - timedelta(seconds=1))
    assert verdict.refusal is Refusal.NOT_YET_ISSUED


def test_revoked_writer_signs_nothing_from_the_revocation_on(root: RootKey) -> None:
    key, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    revoked_at = T0 + timedelta(days=3)
    after = revoke_writer(root, signed, "db1", revoked_at).verify(root.public)
    assert after.authorises(key.public, "maindb", revoked_at - timedelta(seconds=1))
    verdict = after.authorises(key.public, "maindb", revoked_at)
    assert (verdict.writer, verdict.refusal) == ("db1", Refusal.REVOKED)


def test_revocation_is_never_moved_later(root: RootKey) -> None:
    key, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    first = revoke_writer(root, signed, "db1", T0 + timedelta(days=1))
    second = revoke_writer(root, first, "db1", T0 + timedelta(days=9)).verify(root.public)
    assert second.authorises(key.public, "maindb", T0 + timedelta(days=2)).refusal is Refusal.REVOKED


def test_rotation_issues_new_secrets_and_revokes_the_old_key(root: RootKey) -> None:
    old, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    rotated_at = T0 + timedelta(days=30)
    new, signed = issue_writer(root, "db1", ["maindb"], signed, at=rotated_at)
    registry = signed.verify(root.public)
    assert new.generation == 2
    assert new.public != old.public and new.id_key != old.id_key and new.metadata_key != old.metadata_key
    assert registry.authorises(old.public, "maindb", rotated_at).refusal is Refusal.REVOKED
    assert registry.authorises(new.public, "maindb", rotated_at)


def test_a_backup_signed_earlier_in_the_second_of_a_rotation_stays_valid(root: RootKey) -> None:
    # registry times were whole seconds: revoking "now" as 12:00:00 refused the backup the
    # old key had committed at 12:00:00.4, 0.5 s before a routine `keys rotate`; and the
    # old key's backup 0.1 s after the rotation must still be refused
    old, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    second = T0 + timedelta(days=1)
    _, signed = issue_writer(root, "db1", ["maindb"], signed, at=second + timedelta(milliseconds=900))
    registry = signed.verify(root.public)
    assert registry.authorises(old.public, "maindb", second + timedelta(milliseconds=400))
    refusal = registry.authorises(old.public, "maindb", second + timedelta(milliseconds=1000)).refusal
    assert refusal is Refusal.REVOKED


def test_registry_signed_by_another_root_is_refused(root: RootKey) -> None:
    other = RootKey.derive(REPO_ID, RecoveryKey.generate(REPO_ID).secret, root.recovery_public)
    _, forged = issue_writer(other, "attacker", ["maindb"], at=T0)
    with pytest.raises(IntegrityError, match="not signed by this repository's root key"):
        forged.verify(root.public)


def test_edited_registry_is_refused(root: RootKey) -> None:
    _, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    body = json.loads(signed.body)
    body["writers"][0]["assets"] = ["maindb", "keys"]
    edited = SignedRegistry(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode(), signed.signature
    )
    with pytest.raises(IntegrityError, match="not signed"):
        SignedRegistry.from_bytes(edited.to_bytes()).verify(root.public)


def _history(root: RootKey) -> list[SignedRegistry]:
    _, v1 = issue_writer(root, "db1", ["maindb"], at=T0)
    _, v2 = issue_writer(root, "media", ["photos"], v1, at=T0 + timedelta(days=1))
    v3 = revoke_writer(root, v2, "db1", T0 + timedelta(days=2))
    return [v1, v2, v3]


def test_chain_verifies_to_the_newest_version(root: RootKey) -> None:
    history = _history(root)
    newest, checkpoint = verify_chain([h.to_bytes() for h in reversed(history)], root.public, REPO_ID)
    assert newest.sequence == 3
    assert checkpoint == Checkpoint(3, history[2].digest)


def test_rollback_to_an_older_signed_registry_is_detected(root: RootKey) -> None:
    history = _history(root)
    _, seen = verify_chain([h.to_bytes() for h in history], root.public, REPO_ID)
    # the revocation (version 3) is deleted from storage: the old, valid versions remain
    with pytest.raises(IntegrityError, match="rolled back: version 3 was seen before"):
        verify_chain([h.to_bytes() for h in history[:2]], root.public, REPO_ID, seen)


def test_fork_of_the_history_is_detected(root: RootKey) -> None:
    history = _history(root)
    _, seen = verify_chain([h.to_bytes() for h in history], root.public, REPO_ID)
    other_v3 = revoke_writer(root, history[1], "media", T0 + timedelta(days=2))
    with pytest.raises(IntegrityError, match="forked: version 3"):
        verify_chain([h.to_bytes() for h in [*history[:2], other_v3]], root.public, REPO_ID, seen)


def test_gap_or_unchained_version_is_refused(root: RootKey) -> None:
    history = _history(root)
    with pytest.raises(IntegrityError, match="broken at version 2"):
        verify_chain([history[0].to_bytes(), history[2].to_bytes()], root.public, REPO_ID)
    _, stray_v2 = issue_writer(root, "x", ["a"], _history(root)[0], at=T0)  # follows another v1
    with pytest.raises(IntegrityError, match="version 2 does not follow version 1"):
        verify_chain([history[0].to_bytes(), stray_v2.to_bytes()], root.public, REPO_ID)


def test_registry_of_another_repository_is_refused(recovery: RecoveryKey) -> None:
    other = RootKey.derive("e" * 32, recovery.secret, recovery.public)
    _, signed = issue_writer(other, "db1", ["maindb"], at=T0)
    with pytest.raises(IntegrityError, match="another repository"):
        signed.verify(other.public, REPO_ID)


def test_writer_key_file_is_0600_and_round_trips(root: RootKey, tmp_path: Path) -> None:
    key, _ = issue_writer(root, "db1", ["maindb"], at=T0)
    path = tmp_path / "db1.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_writer_key(path)
    assert (loaded.name, loaded.generation, loaded.public, loaded.id_key, loaded.metadata_key) == (
        key.name,
        key.generation,
        key.public,
        key.id_key,
        key.metadata_key,
    )
    assert "signing" not in repr(key) and key.id_key.hex() not in repr(key)
    with pytest.raises(KeyError_, match="already exists"):
        key.save(path)


def test_damaged_writer_key_file_gives_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_text('{"type": "lifeboat-writer-key", "version": 2, "name": "x"}')
    with pytest.raises(KeyError_, match="is damaged"):
        load_writer_key(path)
    path.write_text('{"type": "lifeboat-backup-key"}')
    with pytest.raises(KeyError_, match="not a lifeboat writer key file"):
        load_writer_key(path)


def test_recovery_side_reads_each_writers_id_key(root: RootKey, recovery: RecoveryKey) -> None:
    key, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    entry = signed.verify(root.public).current("db1")
    assert entry is not None
    assert writer_id_key(recovery.private, entry) == key.id_key
    with pytest.raises(IntegrityError):
        writer_id_key(RecoveryKey.generate(REPO_ID).private, entry)


@pytest.mark.parametrize("name", ["", "-rf", "a/b", "x" * 65, "db 1"])
def test_unsafe_writer_names_are_refused(root: RootKey, name: str) -> None:
    with pytest.raises(KeyError_, match="is not allowed"):
        issue_writer(root, name, ["maindb"])


def test_scope_of_a_writer_can_be_widened_and_narrowed(root: RootKey) -> None:
    key, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    wider = grant_assets(root, signed, "db1", ["maindb", "reports"])
    assert wider.verify(root.public).authorises(key.public, "reports", T0 + timedelta(1))
    narrower = grant_assets(root, wider, "db1", ["reports"]).verify(root.public)
    assert narrower.authorises(key.public, "maindb", T0 + timedelta(1)).refusal is Refusal.ASSET_NOT_ALLOWED
    assert narrower.sequence == 3
    revoked = revoke_writer(root, wider, "db1", T0)
    with pytest.raises(KeyError_, match="db1 is revoked"):
        grant_assets(root, revoked, "db1", ["maindb"])


def test_per_writer_id_keys_make_chunk_ids_of_equal_data_unrelated(root: RootKey) -> None:
    # another writer's key cannot confirm a guess about this writer's chunks: ids differ
    a, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    b, _ = issue_writer(root, "db2", ["maindb"], signed, at=T0)
    small_secret = b"PGPASSWORD=hunter2\n"
    id_a = blake3.blake3(small_secret, key=a.id_key).hexdigest()
    guesses = {blake3.blake3(small_secret, key=b.id_key).hexdigest(), blake3.blake3(small_secret).hexdigest()}
    assert id_a not in guesses


def test_root_key_from_a_rotated_chain_is_the_pinned_one(recovery: RecoveryKey, root: RootKey) -> None:
    newer = RecoveryKey.generate(REPO_ID)
    from_chain = RootKey.from_chain(REPO_ID, [newer, recovery])
    assert from_chain.public == root.public, "rotating the recovery key keeps the root"
    assert from_chain.recovery_public == newer.public, "new writers wrap to the newest recovery key"
    with pytest.raises(KeyError_, match="no recovery key"):
        RootKey.from_chain(REPO_ID, [])


def test_authorisation_needs_an_aware_time(root: RootKey) -> None:
    key, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        signed.verify(root.public).authorises(key.public, "maindb", datetime(2026, 1, 2))
