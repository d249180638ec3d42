"""Metadata sealed for its writer and the recovery side: who can read it and who cannot."""

from __future__ import annotations

import json

import pytest

from lifeboat.crypto.keys import RecoveryKey
from lifeboat.crypto.metadata import (
    MIN_PADDED,
    SEALED_OVERHEAD,
    open_metadata_as_recovery,
    open_own_metadata,
    seal_metadata,
)
from lifeboat.crypto.padding import padded_length
from lifeboat.crypto.writers import RootKey, WriterKey, issue_writer
from lifeboat.errors import IntegrityError
from tests.crypto.conftest import REPO_ID

NAME = "snapshots/" + "c" * 64
CANARY = "etc/secret-canary-7f3a/payroll.csv"
HEADER = json.dumps({"asset": "maindb", "host": "db1.internal", "tree": [CANARY]}).encode()


@pytest.fixture
def writers(root: RootKey) -> tuple[WriterKey, WriterKey]:
    db, signed = issue_writer(root, "db1", ["maindb"])
    media, _ = issue_writer(root, "media1", ["photos"], signed)
    return db, media


def test_writer_reads_its_own_metadata(writers: tuple[WriterKey, WriterKey]) -> None:
    db, _ = writers
    assert open_own_metadata(db, NAME, seal_metadata(db, NAME, HEADER)) == HEADER


def test_storage_bytes_show_no_plaintext(writers: tuple[WriterKey, WriterKey]) -> None:
    db, _ = writers
    sealed = seal_metadata(db, NAME, HEADER)
    for needle in (b"secret-canary", b"maindb", b"db1.internal", b"payroll"):
        assert needle not in sealed


def test_another_writer_cannot_read_it(writers: tuple[WriterKey, WriterKey]) -> None:
    db, media = writers
    sealed = seal_metadata(db, NAME, HEADER)
    with pytest.raises(IntegrityError, match="cannot be opened with writer key media1"):
        open_own_metadata(media, NAME, sealed)


def test_recovery_side_reads_every_writer(
    writers: tuple[WriterKey, WriterKey], recovery: RecoveryKey
) -> None:
    db, media = writers
    for writer in (db, media):
        sealed = seal_metadata(writer, NAME, HEADER + writer.name.encode())
        opened = open_metadata_as_recovery([recovery.private], REPO_ID, NAME, writer.public, sealed)
        assert opened == HEADER + writer.name.encode()


def test_recovery_side_tries_older_keys_of_the_chain(
    writers: tuple[WriterKey, WriterKey], recovery: RecoveryKey
) -> None:
    db, _ = writers
    sealed = seal_metadata(db, NAME, HEADER)
    newer = RecoveryKey.generate(REPO_ID)
    assert (
        open_metadata_as_recovery([newer.private, recovery.private], REPO_ID, NAME, db.public, sealed)
        == HEADER
    )
    with pytest.raises(IntegrityError, match="cannot be opened with the recovery key"):
        open_metadata_as_recovery([newer.private], REPO_ID, NAME, db.public, sealed)


def test_copy_under_another_name_or_signer_does_not_open(
    writers: tuple[WriterKey, WriterKey], recovery: RecoveryKey
) -> None:
    db, media = writers
    sealed = seal_metadata(db, NAME, HEADER)
    other_name = "snapshots/" + "d" * 64
    with pytest.raises(IntegrityError):
        open_own_metadata(db, other_name, sealed)
    with pytest.raises(IntegrityError):
        open_metadata_as_recovery([recovery.private], REPO_ID, other_name, db.public, sealed)
    # media1 re-signs db1's ciphertext as its own: the recovery side must not open it as media1's
    with pytest.raises(IntegrityError):
        open_metadata_as_recovery([recovery.private], REPO_ID, NAME, media.public, sealed)


def test_flipped_byte_is_refused(writers: tuple[WriterKey, WriterKey], recovery: RecoveryKey) -> None:
    db, _ = writers
    sealed = bytearray(seal_metadata(db, NAME, HEADER))
    sealed[-20] ^= 1
    with pytest.raises(IntegrityError):
        open_own_metadata(db, NAME, bytes(sealed))
    with pytest.raises(IntegrityError, match="truncated"):
        open_own_metadata(db, NAME, bytes(sealed[:100]))
    with pytest.raises(IntegrityError, match="bad magic"):
        open_own_metadata(db, NAME, b"LBSN" + bytes(sealed[4:]))


def test_sizes_are_padded(writers: tuple[WriterKey, WriterKey]) -> None:
    db, _ = writers
    small = {len(seal_metadata(db, NAME, b"x" * n)) for n in range(0, 400)}
    assert len(small) == 1, "every header below the minimum looks the same"
    near = {len(seal_metadata(db, NAME, b"x" * n)) for n in range(5000, 5100)}
    assert len(near) == 1
    # fixed cost: magic, version, two wrapped keys and the body's envelope
    for n in (0, 100_000, 1 << 20):
        assert len(seal_metadata(db, NAME, b"x" * n)) == SEALED_OVERHEAD + padded_length(
            max(n + 1, MIN_PADDED)
        )
