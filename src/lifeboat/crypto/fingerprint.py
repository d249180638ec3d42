"""Fingerprints of key material that prove the right keys came back without showing them.

For keys and certificates `cryptography` can parse, the fingerprint is the SHA-256 of the
DER SubjectPublicKeyInfo (the same for a private key, its public key and its certificate).
Anything else gets a keyed hash (the caller supplies the keyed function), never a plain hash
of secret bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

PUBLIC_DER = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _public_key(data: bytes) -> Any | None:
    loaders: list[Callable[[], Any]] = [
        lambda: x509.load_pem_x509_certificate(data).public_key(),
        lambda: x509.load_der_x509_certificate(data).public_key(),
        lambda: serialization.load_pem_private_key(data, password=None).public_key(),
        lambda: serialization.load_der_private_key(data, password=None).public_key(),
        lambda: serialization.load_ssh_private_key(data, password=None).public_key(),
        lambda: serialization.load_pem_public_key(data),
        lambda: serialization.load_der_public_key(data),
        lambda: serialization.load_ssh_public_key(data),
    ]
    for load in loaders:
        try:
            return load()
        except Exception:
            continue
    return None


def fingerprint(data: bytes, keyed_hash: Callable[[bytes], str]) -> tuple[str, str]:
    """(kind, fingerprint): kind is 'public-key' or 'keyed-hash'."""
    public = _public_key(data)
    if public is not None:
        der = public.public_bytes(*PUBLIC_DER)
        return "public-key", "sha256:" + hashlib.sha256(der).hexdigest()
    return "keyed-hash", "keyed:" + keyed_hash(data)
