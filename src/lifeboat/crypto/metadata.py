"""Metadata encryption: readable by its writer and by the recovery side, by nobody else.

Snapshot headers, trees, indexes and refs name files, object keys, sizes and times; today
they are MAC'd but plaintext. Each sealed object gets a fresh random data key (DEK), wrapped
twice:

* to the **writer** under a key-encryption key derived from the writer's own metadata key
  (so the host reads back its own headers and indexes for dedup and parents), and
* to the **recovery public key** (X25519, crypto/envelope.py ``wrap_key``), so restores,
  ``check``, ``forget`` and drills read every writer's metadata.

Another writer holds neither its peer's metadata key nor the recovery private key, so it
reads nothing; the storage provider holds no key at all. The body is padded (Padmé, at least
``MIN_PADDED`` bytes) before encryption so its length says little.

Layout::

    sealed = "LBMD" version:u8 writer_wrap_len:u16be writer_wrap
                    recovery_wrap_len:u16be recovery_wrap  body
    writer_wrap   = envelope(KEK, DEK, aad)        KEK = HKDF-SHA256(metadata key, info=KEK_INFO)
    recovery_wrap = wrap_key(recovery_public, DEK, context = "metadata/" ‖ SHA-256(aad))
    body          = envelope(DEK, pad(plaintext), aad)
    aad           = lp("lifeboat/metadata/v1") lp(repository id) lp(object name) lp(writer public)

The associated data binds the object's full name (no copying it under another name) and the
signer's public key: a writer that re-signs a peer's ciphertext as its own produces an object
whose body does not open, so it is refused rather than attributed to the wrong writer.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lifeboat.crypto.envelope import OVERHEAD, WRAPPED_KEY_LEN, Cipher, open_envelope, unwrap_key, wrap_key
from lifeboat.crypto.padding import pad, unpad
from lifeboat.crypto.writers import WriterKey
from lifeboat.errors import IntegrityError

METADATA_MAGIC = b"LBMD"
METADATA_VERSION = 1
KEK_INFO = b"lifeboat/metadata-kek/v1"
AAD_DOMAIN = b"lifeboat/metadata/v1"
# Small headers and refs all look alike below this size; costs at most this many bytes each.
MIN_PADDED = 512
# Bytes a sealed object adds besides padding: magic, version, the writer wrap (envelope of a
# 32-byte key) and the recovery wrap (ephemeral public key + envelope), each with its length,
# and the body's envelope.
SEALED_OVERHEAD = 4 + 1 + 2 + (OVERHEAD + 32) + 2 + WRAPPED_KEY_LEN + OVERHEAD  # 192 bytes


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _aad(repo_id: str, name: str, writer_public: bytes) -> bytes:
    return _lp(AAD_DOMAIN) + _lp(repo_id.encode()) + _lp(name.encode()) + _lp(writer_public)


def _recovery_context(aad: bytes) -> bytes:
    return b"metadata/" + hashlib.sha256(aad).digest()


def _kek(metadata_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEK_INFO).derive(metadata_key)


def seal_metadata(writer: WriterKey, name: str, plaintext: bytes) -> bytes:
    """``plaintext`` (already compressed, if at all) sealed for its writer and the recovery side."""
    return seal_for(
        writer.repo_id, writer.public, writer.metadata_key, writer.recovery_public, name, plaintext
    )


def seal_for(
    repo_id: str,
    writer_public: bytes,
    metadata_key: bytes,
    recovery_public: bytes,
    name: str,
    plaintext: bytes,
) -> bytes:
    """``seal_metadata`` with the keys given one by one (the repository holds a writer's keys
    as a backup key file, or the root key on the recovery side, not as a ``WriterKey``)."""
    aad = _aad(repo_id, name, writer_public)
    dek = os.urandom(32)
    writer_wrap = Cipher(_kek(metadata_key)).seal(dek, aad)
    recovery_wrap = wrap_key(recovery_public, dek, _recovery_context(aad))
    body = Cipher(dek).seal(pad(plaintext, MIN_PADDED), aad)
    return (
        METADATA_MAGIC
        + bytes([METADATA_VERSION])
        + struct.pack(">H", len(writer_wrap))
        + writer_wrap
        + struct.pack(">H", len(recovery_wrap))
        + recovery_wrap
        + body
    )


def _split(sealed: bytes, name: str) -> tuple[bytes, bytes, bytes]:
    """(writer wrap, recovery wrap, body) of a sealed object, after bounds checks."""
    if len(sealed) < 7 or sealed[:4] != METADATA_MAGIC:
        raise IntegrityError(f"{name} is damaged (bad magic)")
    if sealed[4] != METADATA_VERSION:
        raise IntegrityError(f"{name} has unsupported metadata version {sealed[4]}")
    (writer_len,) = struct.unpack(">H", sealed[5:7])
    recovery_at = 7 + writer_len
    if len(sealed) < recovery_at + 2:
        raise IntegrityError(f"{name} is truncated")
    (recovery_len,) = struct.unpack(">H", sealed[recovery_at : recovery_at + 2])
    body_at = recovery_at + 2 + recovery_len
    if len(sealed) <= body_at:
        raise IntegrityError(f"{name} is truncated")
    return sealed[7:recovery_at], sealed[recovery_at + 2 : body_at], sealed[body_at:]


def _open_body(dek: bytes, body: bytes, aad: bytes) -> bytes:
    if len(dek) != 32:  # a wrap made by someone else around a key of another size
        raise IntegrityError("sealed object is damaged (its data key is not 32 bytes)")
    return unpad(open_envelope(dek, body, aad))


def open_own_metadata(writer: WriterKey, name: str, sealed: bytes) -> bytes:
    """A writer reading back what it wrote; another writer's object fails to open."""
    return open_own_with(writer.repo_id, writer.public, writer.metadata_key, writer.name, name, sealed)


def open_own_with(
    repo_id: str, writer_public: bytes, metadata_key: bytes, writer_name: str, name: str, sealed: bytes
) -> bytes:
    """``open_own_metadata`` with the writer's keys given one by one."""
    writer_wrap, _, body = _split(sealed, name)
    aad = _aad(repo_id, name, writer_public)
    try:
        dek = open_envelope(_kek(metadata_key), writer_wrap, aad)
    except IntegrityError:
        raise IntegrityError(
            f"{name} cannot be opened with writer key {writer_name}: another writer wrote it, "
            "or it was modified"
        ) from None
    return _open_body(dek, body, aad)


def open_metadata_as_recovery(
    recovery: Sequence[X25519PrivateKey], repo_id: str, name: str, writer_public: bytes, sealed: bytes
) -> bytes:
    """The recovery side reading any writer's object; ``writer_public`` is the key whose
    signature on the object was verified, and ``recovery`` the keys of the recovery chain
    (newest first), since the object may predate a rotation."""
    _, recovery_wrap, body = _split(sealed, name)
    aad = _aad(repo_id, name, writer_public)
    context = _recovery_context(aad)
    for key in recovery:
        try:
            dek = unwrap_key(key, recovery_wrap, context)
        except IntegrityError:
            continue
        return _open_body(dek, body, aad)
    raise IntegrityError(
        f"{name} cannot be opened with the recovery key: it was modified, signed by another "
        "writer than the one that sealed it, or sealed for a newer recovery key"
    )
