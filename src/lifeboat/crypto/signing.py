"""Ed25519 signatures for drill evidence: the private key stays with the drill runner, the
public key is recorded in the repository so anyone can verify a bundle offline."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lifeboat.crypto.keys import write_secret_file
from lifeboat.errors import KeyError_


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def load_or_create(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError:
            raise KeyError_(f"drill signing key {path} is damaged") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyError_(f"drill signing key {path} is not an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    write_secret_file(
        path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return key


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data)).decode()


def verify(public: str, data: bytes, signature: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public)).verify(base64.b64decode(signature), data)
    except (InvalidSignature, ValueError):
        return False
    return True
