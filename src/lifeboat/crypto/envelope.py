"""Authenticated encryption envelopes and X25519 key wrapping.

Every encrypted object starts with a one-byte cipher-suite id so that new suites can be
added while old repositories stay readable (borg's habit). The suite byte is authenticated
together with the caller's associated data.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lifeboat.errors import IntegrityError

SUITE_AES256_GCM = 0x01
SUITE_CHACHA20_POLY1305 = 0x02
AVAILABLE_SUITES: dict[int, type[AESGCM] | type[ChaCha20Poly1305]] = {
    SUITE_AES256_GCM: AESGCM,
    SUITE_CHACHA20_POLY1305: ChaCha20Poly1305,
}
NONCE_LEN = 12
TAG_LEN = 16
OVERHEAD = 1 + NONCE_LEN + TAG_LEN
WRAPPED_KEY_LEN = 32 + OVERHEAD + 32


class Cipher:
    """A data key bound to a suite; reusable across many seal/open calls."""

    def __init__(self, key: bytes, suite: int = SUITE_AES256_GCM) -> None:
        if suite not in AVAILABLE_SUITES:
            raise IntegrityError(f"unknown cipher suite 0x{suite:02x}")
        self.suite = suite
        self._aead = AVAILABLE_SUITES[suite](key)

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Encrypts and authenticates ``plaintext`` (``aad`` authenticated, not encrypted)."""
        nonce = os.urandom(NONCE_LEN)
        header = bytes([self.suite]) + nonce
        return header + self._aead.encrypt(nonce, plaintext, header[:1] + aad)

    def open(self, envelope: bytes | memoryview, aad: bytes = b"") -> bytes:
        """Decrypts an envelope from ``seal`` (IntegrityError when tampered)."""
        return open_with(self._aead, self.suite, envelope, aad)


def open_with(aead: AESGCM | ChaCha20Poly1305, suite: int, envelope: bytes | memoryview, aad: bytes) -> bytes:
    """Decrypts an envelope with the AEAD its suite byte names. The ciphertext is read in
    place (a view): a copy of a restore's every blob cost more than decrypting it."""
    if len(envelope) < OVERHEAD or envelope[0] != suite:
        raise IntegrityError("encrypted object is truncated or uses an unexpected suite")
    view = memoryview(envelope)
    try:
        return aead.decrypt(view[1 : 1 + NONCE_LEN], view[1 + NONCE_LEN :], bytes((suite,)) + aad)
    except InvalidTag:
        raise IntegrityError("authentication failed: data was modified or the key is wrong") from None


def open_envelope(key: bytes, envelope: bytes, aad: bytes = b"") -> bytes:
    """Decrypts an envelope with a raw key."""
    if not envelope:
        raise IntegrityError("encrypted object is empty")
    suite = envelope[0]
    return Cipher(key, suite).open(envelope, aad)


def public_bytes(private: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of an X25519 private key."""
    return private.public_key().public_bytes_raw()


def _kek(shared: bytes, eph_public: bytes, recipient_public: bytes, context: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=eph_public + recipient_public,
        info=b"lifeboat/wrap/v1/" + context,
    ).derive(shared)


def wrap_key(recipient_public: bytes, data_key: bytes, context: bytes) -> bytes:
    """Encrypt ``data_key`` so that only the holder of the recipient's private key reads it."""
    eph = X25519PrivateKey.generate()
    eph_public = public_bytes(eph)
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    kek = _kek(shared, eph_public, recipient_public, context)
    return eph_public + Cipher(kek).seal(data_key, context)


def unwrap_key(recipient: X25519PrivateKey, wrapped: bytes, context: bytes) -> bytes:
    """The data key ``wrap_key`` wrapped for this recipient (IntegrityError otherwise)."""
    if len(wrapped) < 32 + OVERHEAD:
        raise IntegrityError("wrapped key is truncated")
    eph_public = wrapped[:32]
    try:
        shared = recipient.exchange(X25519PublicKey.from_public_bytes(eph_public))
    except ValueError:  # a low-order point, e.g. a zeroed header: cannot be ours
        raise IntegrityError("wrapped key is damaged") from None
    kek = _kek(shared, eph_public, public_bytes(recipient), context)
    return open_envelope(kek, wrapped[32:], context)
