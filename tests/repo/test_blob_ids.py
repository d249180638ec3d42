"""Blob ids under each writer's own id key, and padded blob payloads (issue #14).

Through the repository API with real local storage: a writer deduplicates against its own
data only; the recovery side reads and checks every writer's blobs (their id keys come from
the registry), blobs written under the repository-wide id key before per-writer keys still
verify, and a blob under a key nobody registered does not. Payloads are Padmé-padded after
compression, except bodies already at a Padmé length (full raw chunks); old unpadded
encodings still read."""

from __future__ import annotations

import os
import random
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
import zstandard

from lifeboat.crypto.keys import BackupKey, RecoveryKey
from lifeboat.crypto.padding import padded_length
from lifeboat.errors import IntegrityError
from lifeboat.repo import Repository
from lifeboat.repo.chunking import DEFAULT_CHUNK_SIZE, decode_payload, encode_payload
from lifeboat.repo.format import BLOB_RAW, BLOB_RAW_PADDED, BLOB_ZSTD, BLOB_ZSTD_PADDED
from lifeboat.repo.keyring import Keyring
from lifeboat.repo.model import SnapshotInfo
from lifeboat.services.keys import issue_writer_key
from lifeboat.storage import open_storage
from lifeboat.storage.base import Storage

MIB = 1 << 20


def backup(repo: Repository, asset: str, files: dict[str, bytes]) -> SnapshotInfo:
    with repo.backup(asset, "files") as session:
        for name, data in files.items():
            session.add_bytes(name, data)
        return session.commit()


def restored(storage: Storage, recovery: RecoveryKey, snap: SnapshotInfo) -> dict[str, bytes]:
    reader = Repository.open(storage, recovery_key=recovery).reader(snap.id)
    return {e.path: reader.read(e) for e in reader.entries() if e.type == "file"}


def mixed(seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    text = b"".join(b"row %d: %s\n" % (i, rng.choice([b"alpha", b"beta", b"gamma"])) for i in range(60_000))
    return {
        "media.bin": rng.randbytes(3 * MIB + 12_345),  # incompressible: full raw chunks and a tail
        "table.txt": text,  # compresses
        "pin.txt": b"%06d\n" % rng.randrange(10**6),
    }


@pytest.fixture
def site(tmp_path: Path) -> tuple[Storage, Repository, BackupKey, RecoveryKey]:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, key, recovery = Repository.create(storage, writer="host-a")
    return storage, repo, key, recovery


def test_a_writer_dedups_its_own_data_and_another_writer_stores_the_same_bytes_again(site) -> None:
    storage, repo_a, key_a, recovery = site
    assert key_a.chunk_id_key is not None and key_a.chunk_id_key != key_a.id_key
    files = mixed(1)
    size = sum(map(len, files.values()))
    first = backup(repo_a, "app", files)
    second = backup(repo_a, "app", files)
    assert first.stats.new_bytes >= size
    assert second.stats.new_bytes == 0 and second.stats.stored_bytes == 0, second.stats

    key_b, _, _ = issue_writer_key(Repository.open(storage, recovery_key=recovery), "host-b", ["web"])
    assert key_b.chunk_id_key not in (None, key_a.chunk_id_key, key_a.id_key)
    repo_b = Repository.open(storage, backup_key=key_b)
    other = backup(repo_b, "web", files)
    # the cost of per-writer id keys: no dedup across writers, the same bytes stored twice
    assert other.stats.new_bytes >= size and other.stats.new_chunks == first.stats.new_chunks
    assert backup(repo_b, "web", files).stats.new_bytes == 0

    assert restored(storage, recovery, second) == files
    assert restored(storage, recovery, other) == files
    report = Repository.open(storage, recovery_key=recovery).check(read_data=True)
    assert report.ok, report.problems


def test_blobs_under_the_repository_id_key_from_before_per_writer_keys_still_verify(site) -> None:
    storage, _, key, recovery = site
    # a key file written before writers had their own id key: ids under the repository's
    legacy = replace(key, chunk_id_key=None)
    old = backup(Repository.open(storage, backup_key=legacy), "app", mixed(2))
    new = backup(Repository.open(storage, backup_key=key), "app", mixed(2))
    assert new.stats.new_chunks == old.stats.new_chunks  # new ids: nothing shared with old blobs
    assert restored(storage, recovery, old) == mixed(2) == restored(storage, recovery, new)
    assert Repository.open(storage, recovery_key=recovery).check(read_data=True).ok


def test_a_blob_under_an_id_key_no_writer_registered_fails_its_id_check(site) -> None:
    storage, _, key, recovery = site
    rogue = replace(key, chunk_id_key=os.urandom(32))
    snap = backup(Repository.open(storage, backup_key=rogue), "app", {"f.txt": b"unverifiable\n"})
    with pytest.raises(IntegrityError, match="does not match its id"):
        restored(storage, recovery, snap)
    report = Repository.open(storage, recovery_key=recovery).check(read_data=True)
    assert not report.ok and "corrupt-chunk" in {p.kind for p in report.problems}


def test_equal_bytes_get_unrelated_ids_under_two_writers_keys(site) -> None:
    storage, _, key_a, recovery = site
    key_b, _, _ = issue_writer_key(Repository.open(storage, recovery_key=recovery), "host-b", ["web"])
    data = b"123456\n"
    ids = {Keyring.for_backup(k).blob_id(data) for k in (key_a, key_b, replace(key_a, chunk_id_key=None))}
    assert len(ids) == 3


@pytest.mark.parametrize("size", [1, 7, 1000, 4097, 100_000, MIB - 1, MIB + 1])
def test_payloads_are_padded_to_padme_lengths(size: int) -> None:
    data = random.Random(size).randbytes(size)
    payload = encode_payload(data)
    body = len(payload) - 1
    assert payload[0] in (BLOB_RAW, BLOB_RAW_PADDED)
    assert padded_length(body) == body  # a stored length is always on the Padmé grid
    assert decode_payload(payload, size) == data


def test_lengths_within_one_padme_step_are_stored_alike() -> None:
    """The storage provider cannot tell a 5000-byte file from a 5100-byte one by size."""
    stored = {len(encode_payload(random.Random(n).randbytes(n))) for n in range(5000, 5100, 7)}
    assert len(stored) == 1


def test_full_raw_chunks_are_not_padded_and_compressed_bodies_are() -> None:
    full = os.urandom(DEFAULT_CHUNK_SIZE)
    assert encode_payload(full) == bytes([BLOB_RAW]) + full  # no 1 MiB -> 1 MiB + 32 KiB
    pages = os.urandom(128 << 10)
    assert encode_payload(pages)[0] == BLOB_RAW and len(encode_payload(pages)) == len(pages) + 1
    text = b"".join(b"line %d\n" % i for i in range(30_000))
    payload = encode_payload(text)
    assert payload[0] in (BLOB_ZSTD, BLOB_ZSTD_PADDED) and len(payload) < len(text) // 2
    assert decode_payload(payload, len(text)) == text


def test_old_unpadded_encodings_still_read_and_damaged_padding_is_refused() -> None:
    data = b"written before padding\n" * 50
    assert decode_payload(bytes([BLOB_RAW]) + data, len(data)) == data
    assert decode_payload(bytes([BLOB_ZSTD]) + zstandard.ZstdCompressor().compress(data), len(data)) == data
    with pytest.raises(IntegrityError, match="padding"):
        decode_payload(bytes([BLOB_RAW_PADDED]) + data + bytes(10), len(data))
    with pytest.raises(IntegrityError, match="unknown blob encoding"):
        decode_payload(b"\x04" + zlib.compress(data), len(data))


def test_the_key_file_holds_the_writers_id_key_and_the_registry_wraps_the_same_key(site, tmp_path) -> None:
    from lifeboat.crypto.keys import load_backup_key
    from lifeboat.repo.trust import writer_id_keys

    storage, _, key, recovery = site
    key.save(tmp_path / "writer.key")
    assert load_backup_key(tmp_path / "writer.key").chunk_id_key == key.chunk_id_key
    trust = Repository.open(storage, recovery_key=recovery).trust()
    assert trust is not None and writer_id_keys(trust.registry, [recovery]) == [key.chunk_id_key]


def test_a_rotated_writer_gets_a_new_id_key_and_both_generations_data_still_verify(site) -> None:
    storage, repo, key, recovery = site
    files = {"pin.txt": b"271828\n", "notes.txt": b"rotation\n" * 1000}
    old = backup(repo, "app", files)
    rotated, _, revoked = issue_writer_key(Repository.open(storage, recovery_key=recovery), "host-a", ["*"])
    assert revoked == 1 and rotated.chunk_id_key not in (None, key.chunk_id_key)
    new = backup(Repository.open(storage, backup_key=rotated), "app", files)
    assert new.stats.new_chunks == old.stats.new_chunks  # the cost: uploaded once more
    reader = Repository.open(storage, recovery_key=recovery)
    assert restored(storage, recovery, old) == files == restored(storage, recovery, new)
    assert reader.check(read_data=True).ok
