"""Evidence verifies only against the pinned key fingerprint."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifeboat.crypto import fingerprint as key_material
from lifeboat.crypto.keys import RecoveryKey
from lifeboat.crypto.pinning import (
    fingerprint,
    normalise_fingerprint,
    open_signing_key,
    seal_signing_key,
    sign_bundle,
    verify_bundle_signature,
)
from lifeboat.errors import IntegrityError, KeyError_

BUNDLE = b"SHA256SUMS of a drill bundle\nabc  report.md\n"


def test_fingerprint_matches_the_key_material_fingerprint_of_the_pem() -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kind, expected = key_material.fingerprint(pem, lambda _: "unused")
    assert kind == "public-key"
    assert fingerprint(key.public_key()) == expected
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert fingerprint(raw) == expected


def test_bundle_signed_by_the_pinned_key_verifies() -> None:
    key = Ed25519PrivateKey.generate()
    pinned = fingerprint(key.public_key())
    assert verify_bundle_signature(BUNDLE, sign_bundle(key, BUNDLE), pinned) == pinned
    typed = pinned.upper().replace("SHA256:", "")  # as an auditor might paste it
    assert verify_bundle_signature(BUNDLE, sign_bundle(key, BUNDLE), typed) == pinned


def test_bundle_signed_by_any_other_key_is_refused() -> None:
    real, attacker = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pinned = fingerprint(real.public_key())
    forged = sign_bundle(attacker, BUNDLE + b"evil  report.md\n")
    with pytest.raises(IntegrityError, match=f"signed by key {fingerprint(attacker.public_key())}, not by"):
        verify_bundle_signature(BUNDLE + b"evil  report.md\n", forged, pinned)


def test_modified_bundle_or_signature_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    pinned = fingerprint(key.public_key())
    signature = sign_bundle(key, BUNDLE)
    with pytest.raises(IntegrityError, match="was modified"):
        verify_bundle_signature(BUNDLE.replace(b"abc", b"abd"), signature, pinned)
    with pytest.raises(IntegrityError, match="malformed"):
        verify_bundle_signature(BUNDLE, signature[:-1], pinned)


@pytest.mark.parametrize("text", ["", "sha256:abc", "md5:" + "0" * 64, "sha256:" + "g" * 64])
def test_a_pin_that_is_not_a_fingerprint_gives_a_one_line_error(text: str) -> None:
    with pytest.raises(KeyError_, match="not a fingerprint"):
        normalise_fingerprint(text)


def test_drill_key_is_kept_wrapped_to_the_recovery_key() -> None:
    recovery, newer, stranger = (RecoveryKey.generate("r" * 32) for _ in range(3))
    key = Ed25519PrivateKey.generate()
    sealed = seal_signing_key(recovery.public, key)
    assert key.private_bytes_raw() not in sealed
    opened = open_signing_key([newer.private, recovery.private], sealed)
    assert fingerprint(opened.public_key()) == fingerprint(key.public_key())
    with pytest.raises(KeyError_, match="cannot be opened with this recovery key"):
        open_signing_key([stranger.private], sealed)
