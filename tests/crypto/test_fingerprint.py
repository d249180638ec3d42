"""Key fingerprints (what keys reports show): every encoding of one key pair gives the same
public-key fingerprint, and anything that is not a key gets a keyed hash. Pure logic."""

from __future__ import annotations

import datetime
import hashlib
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from lifeboat.crypto.fingerprint import fingerprint


def keyed(data: bytes) -> str:
    return hashlib.blake2b(data, key=b"test-key", digest_size=16).hexdigest()


def encodings(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> list[bytes]:
    none = s.NoEncryption()
    public = key.public_key()
    forms = [
        key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, none),
        key.private_bytes(s.Encoding.DER, s.PrivateFormat.PKCS8, none),
        key.private_bytes(s.Encoding.PEM, s.PrivateFormat.OpenSSH, none),
        public.public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(s.Encoding.DER, s.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(s.Encoding.OpenSSH, s.PublicFormat.OpenSSH),
    ]
    if isinstance(key, rsa.RSAPrivateKey):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "platform.example")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(1)
            .not_valid_before(datetime.datetime(2026, 1, 1))
            .not_valid_after(datetime.datetime(2027, 1, 1))
            .sign(key, hashes.SHA256())
        )
        forms += [cert.public_bytes(s.Encoding.PEM), cert.public_bytes(s.Encoding.DER)]
        forms.append(b"# issued by the platform CA\n" + cert.public_bytes(s.Encoding.PEM))  # text before
    return forms


@pytest.mark.parametrize(
    "make", [lambda: rsa.generate_private_key(65537, 2048), ed25519.Ed25519PrivateKey.generate]
)
def test_every_encoding_of_a_key_has_its_public_key_fingerprint(make) -> None:  # type: ignore[no-untyped-def]
    key = make()
    spki = key.public_key().public_bytes(s.Encoding.DER, s.PublicFormat.SubjectPublicKeyInfo)
    expected = ("public-key", "sha256:" + hashlib.sha256(spki).hexdigest())
    assert [fingerprint(form, keyed) for form in encodings(key)] == [expected] * len(encodings(key))


def test_what_is_not_a_key_gets_a_keyed_hash() -> None:
    # shaped like a key at first glance: a DER SEQUENCE byte, PEM armour, an SSH key type
    for data in (
        b"\x30" + os.urandom(200),
        b"-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n",
        b"ssh-ed25519 AAAAnotakey\n",
        b"master-secret=canary\n",
        os.urandom(4096),
        b"",
    ):
        assert fingerprint(data, keyed) == ("keyed-hash", "keyed:" + keyed(data))
