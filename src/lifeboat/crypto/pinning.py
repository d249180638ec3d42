"""Evidence verified against a pinned key fingerprint, never against a key the evidence
carries (issue #14: a bundle signed with any fresh key used to verify).

A fingerprint is ``sha256:`` and the hex SHA-256 of the key's DER SubjectPublicKeyInfo, the
same form crypto/fingerprint.py gives any public key, so an auditor can recompute it with
``openssl pkey -pubin -outform DER | sha256sum``. ``init`` and ``drill run`` print it; the
auditor pins it out of band (``evidence verify BUNDLE --key FINGERPRINT``).

The signature covers ``EVIDENCE_DOMAIN ‖ SHA-256(bundle)`` and is stored in the
crypto/signed.py ``Signature`` form (public key ‖ signature): the public key is there only to
be compared with the pin, so a signature by any other key is refused before it is checked.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lifeboat.crypto.envelope import unwrap_key, wrap_key
from lifeboat.crypto.fingerprint import public_key_der
from lifeboat.crypto.signed import Signature, signature_matches
from lifeboat.crypto.writers import raw_public
from lifeboat.errors import IntegrityError, KeyError_

EVIDENCE_DOMAIN = b"lifeboat/evidence/v1\x00"
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")


def fingerprint(public_key: Ed25519PublicKey | bytes) -> str:
    """``sha256:<hex>`` of an Ed25519 public key (an object or its 32 raw bytes)."""
    key = Ed25519PublicKey.from_public_bytes(public_key) if isinstance(public_key, bytes) else public_key
    return "sha256:" + hashlib.sha256(public_key_der(key)).hexdigest()


def normalise_fingerprint(text: str) -> str:
    """A pinned fingerprint as typed (any case, optional ``sha256:``, ``:`` or spaces between
    bytes) in the canonical form; a one-line error for anything else."""
    compact = re.sub(r"[\s:]", "", text.strip().lower().removeprefix("sha256:"))
    canonical = "sha256:" + compact
    if not _FINGERPRINT.fullmatch(canonical):
        raise KeyError_(
            "the pinned key is not a fingerprint",
            hint="give it as printed by 'lifeboat init': sha256:<64 hex>",
        )
    return canonical


def _message(bundle_bytes: bytes) -> bytes:
    return EVIDENCE_DOMAIN + hashlib.sha256(bundle_bytes).digest()


def sign_bundle(key: Ed25519PrivateKey, bundle_bytes: bytes) -> bytes:
    return Signature(raw_public(key), key.sign(_message(bundle_bytes))).to_bytes()


def verify_bundle_signature(bundle_bytes: bytes, signature: bytes, pinned_fingerprint: str) -> str:
    """The signer's fingerprint when the pinned key signed exactly these bytes; otherwise
    an IntegrityError naming the key that did sign (or that the signature is bad)."""
    pinned = normalise_fingerprint(pinned_fingerprint)
    parsed = Signature.from_bytes(signature)
    try:
        signer = fingerprint(parsed.public)
    except ValueError:
        raise IntegrityError("evidence signature is malformed") from None
    if not hmac.compare_digest(signer, pinned):
        raise IntegrityError(f"evidence was signed by key {signer}, not by the pinned key {pinned}")
    if not signature_matches(parsed.public, _message(bundle_bytes), parsed.signature):
        raise IntegrityError("evidence signature does not match the bundle (it was modified)")
    return signer


# The drill signing key is kept wrapped to the recovery key (a drill needs that key or the
# shares anyway), never in clear in the state dir where an insider could sign with it.
DRILL_KEY_CONTEXT = b"drill-signing-key"


def seal_signing_key(recovery_public: bytes, key: Ed25519PrivateKey) -> bytes:
    return wrap_key(recovery_public, key.private_bytes_raw(), DRILL_KEY_CONTEXT)


def open_signing_key(recovery: Sequence[X25519PrivateKey], sealed: bytes) -> Ed25519PrivateKey:
    """The drill signing key, with any key of the recovery chain (newest first)."""
    for private in recovery:
        try:
            return Ed25519PrivateKey.from_private_bytes(unwrap_key(private, sealed, DRILL_KEY_CONTEXT))
        except IntegrityError:
            continue
    raise KeyError_("the drill signing key cannot be opened with this recovery key")
