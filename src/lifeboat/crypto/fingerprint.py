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

import blake3

FINGERPRINT_CONTEXT = b"lifeboat/fingerprint/v1"  # what the keyed hash is of, before the bytes


def _keyed_blake3(data: bytes, key: bytes) -> blake3.blake3:
    return blake3.blake3(data, key=key, max_threads=1)


def fingerprint_hash(
    key: bytes, data: bytes, keyed: Callable[[bytes, bytes], blake3.blake3] = _keyed_blake3
) -> str:
    """The keyed hash of ``fingerprint`` for a repository whose MAC key is ``key`` (the
    repository's ``keyed_hash``): keyed BLAKE3 of the context and the bytes, 128 bits in
    hex. ``keyed`` computes the same BLAKE3 its own way (the keyring's keeps the interpreter
    lock)."""
    return keyed(FINGERPRINT_CONTEXT + data, key).digest().hex()[:32]


SSH_KEY_TYPES = (b"ssh-", b"ecdsa-sha2-", b"sk-ssh-", b"sk-ecdsa-")


def _loaders(data: bytes) -> list[Callable[[], Any]]:
    """The parsers that could accept ``data`` at all, in the order they are tried: PEM needs
    its armour, DER starts with an ASN.1 SEQUENCE, an OpenSSH public key with its type. A
    keys asset of 30,000 plain files spent most of its backup raising eight parse errors for
    each. The order and each parser's input are unchanged, so every fingerprint is the same
    as before (a restore compares against fingerprints taken by older versions)."""
    pem = b"-----BEGIN" in data
    der = data[:1] == b"\x30"
    ssh = data.lstrip().startswith(SSH_KEY_TYPES)
    if not (pem or der or ssh):
        return []  # most files of a keys asset that are no key: no parser built at all
    # here, not at the top: the keyring imports this module for ``fingerprint_hash``, and
    # serialization (with its SSH, EC and DSA modules) cost every command 3 ms to import
    from cryptography.hazmat.primitives import serialization

    candidates: list[tuple[bool, Callable[[], Any]]] = [
        (pem, lambda: _certificate_key(data, pem=True)),
        (der, lambda: _certificate_key(data, pem=False)),
        (pem, lambda: serialization.load_pem_private_key(data, password=None).public_key()),
        (der, lambda: serialization.load_der_private_key(data, password=None).public_key()),
        (pem, lambda: serialization.load_ssh_private_key(data, password=None).public_key()),
        (pem, lambda: serialization.load_pem_public_key(data)),
        (der, lambda: serialization.load_der_public_key(data)),
        (ssh, lambda: serialization.load_ssh_public_key(data)),
    ]
    return [load for applies, load in candidates if applies]


def _certificate_key(data: bytes, *, pem: bool) -> Any:
    # x509 costs ~30 ms to import; `status` and the drills reach this module through
    # pinning.py without ever parsing a certificate
    from cryptography import x509

    load = x509.load_pem_x509_certificate if pem else x509.load_der_x509_certificate
    return load(data).public_key()


def _public_key(data: bytes) -> Any | None:
    for load in _loaders(data):
        try:
            return load()
        except Exception:
            continue
    return None


def public_key_der(public: Any) -> bytes:
    """A public key's DER SubjectPublicKeyInfo, what its fingerprint is the SHA-256 of."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return bytes(public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


def fingerprint(data: bytes, keyed_hash: Callable[[bytes], str]) -> tuple[str, str]:
    """(kind, fingerprint): kind is 'public-key' or 'keyed-hash'."""
    public = _public_key(data)
    if public is not None:
        der = public_key_der(public)
        return "public-key", "sha256:" + hashlib.sha256(der).hexdigest()
    return "keyed-hash", "keyed:" + keyed_hash(data)
