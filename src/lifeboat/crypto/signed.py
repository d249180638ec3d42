"""Detached writer signatures on repository objects, and the rules that judge them (issue #14).

A signature covers a domain-separated statement, not the bare bytes:

    "lifeboat/signed-object/v1" 0x00 || lp(type) || lp(repository id) || lp(object name)
        || asset || SHA-256(content)

where ``lp(x)`` is a 4-byte big-endian length followed by ``x`` and ``asset`` is 0x00 for
objects that belong to no single asset or 0x01 || lp(asset name). Every field is framed, so
no two different statements share bytes: a signature made for ``snapshots/A`` of repository
R is worthless for ``snapshots/B``, for an index, for another asset or for repository R'.
The content hash is over the stored bytes (after encryption), so storage-level checks need
no key that decrypts.

Verification yields an :class:`~lifeboat.crypto.writers.Authorisation`: the writer's name
or a typed refusal naming why (unsigned, malformed, bad signature, unknown, revoked,
asset not allowed).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from lifeboat.crypto.writers import Authorisation, Refusal, Registry, RootKey, WriterKey
from lifeboat.errors import IntegrityError

OBJECT_DOMAIN = b"lifeboat/signed-object/v1\x00"
SIGNATURE_MAGIC = b"LBSG"
SIGNATURE_VERSION = 1
PUBLIC_LEN = 32
SIG_LEN = 64
SIGNATURE_SIZE = len(SIGNATURE_MAGIC) + 1 + PUBLIC_LEN + SIG_LEN  # 101 bytes


class ObjectType(StrEnum):
    """What a signature was made for: part of the signed statement."""

    SNAPSHOT = "snapshot"
    INDEX = "index"
    REF = "ref"
    WAL = "wal"
    RECORD = "record"
    AUDIT = "audit"
    EVIDENCE = "evidence"


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def statement(obj_type: ObjectType, repo_id: str, name: str, asset: str | None, content: bytes) -> bytes:
    """The exact bytes a writer signs for one object (see the module docstring)."""
    asset_part = b"\x00" if asset is None else b"\x01" + _lp(asset.encode())
    return (
        OBJECT_DOMAIN
        + _lp(obj_type.value.encode())
        + _lp(repo_id.encode())
        + _lp(name.encode())
        + asset_part
        + hashlib.sha256(content).digest()
    )


@dataclass(frozen=True)
class Signature:
    """A detached signature as stored next to its object: who signed, and the signature."""

    public: bytes
    signature: bytes

    def to_bytes(self) -> bytes:
        return SIGNATURE_MAGIC + bytes([SIGNATURE_VERSION]) + self.public + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> Signature:
        if len(data) != SIGNATURE_SIZE or data[:4] != SIGNATURE_MAGIC or data[4] != SIGNATURE_VERSION:
            raise IntegrityError("object signature is malformed")
        return cls(data[5 : 5 + PUBLIC_LEN], data[5 + PUBLIC_LEN :])


def sign_object(
    writer: WriterKey, obj_type: ObjectType, name: str, asset: str | None, content: bytes
) -> Signature:
    return Signature(writer.public, writer.sign(statement(obj_type, writer.repo_id, name, asset, content)))


def signature_matches(public: bytes, signed: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, signed)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_object(
    registry: Registry,
    obj_type: ObjectType,
    name: str,
    asset: str | None,
    content: bytes,
    signature: bytes | None,
    at_time: datetime,
) -> Authorisation:
    """Who wrote this object, if they may have; otherwise why not.

    ``registry`` must come from ``verify_chain``/``SignedRegistry.verify``; the repository
    id in the statement is the registry's, so an object signed for another repository fails.
    The signature is checked before the registry is consulted: a refusal for a revoked or
    out-of-scope writer names a writer that really signed. For ``BAD_SIGNATURE`` the name is
    only the one the trailer *claims* (anyone can copy a public key), and reports must say so.
    """
    if signature is None:
        return Authorisation(None, Refusal.UNSIGNED)
    try:
        parsed = Signature.from_bytes(signature)
    except IntegrityError:
        return Authorisation(None, Refusal.MALFORMED)
    signed = statement(obj_type, registry.repo_id, name, asset, content)
    if not signature_matches(parsed.public, signed, parsed.signature):
        entry = registry.entry_for(parsed.public)
        return Authorisation(entry.name if entry else None, Refusal.BAD_SIGNATURE)
    return registry.authorises(parsed.public, asset, at_time)


def sign_by_root(root: RootKey, obj_type: ObjectType, name: str, content: bytes) -> Signature:
    """The root key vouching for a repository-wide record (the drill key, the escrow key)."""
    return Signature(root.public, root.signing.sign(statement(obj_type, root.repo_id, name, None, content)))


def verify_by_root(
    root_public: bytes, repo_id: str, obj_type: ObjectType, name: str, content: bytes, signature: bytes | None
) -> None:
    """Returns when the pinned root key signed this record under this name; otherwise an
    IntegrityError (a record planted with a writer key is refused, not first-writer-wins)."""
    if signature is None:
        raise IntegrityError(f"{name} is not signed by the repository's root key")
    parsed = Signature.from_bytes(signature)
    if not hmac.compare_digest(parsed.public, root_public):
        raise IntegrityError(f"{name} is signed by another key than the repository's root key")
    if not signature_matches(
        root_public, statement(obj_type, repo_id, name, None, content), parsed.signature
    ):
        raise IntegrityError(f"{name} does not match its root signature (modified or renamed)")


# --- time ----------------------------------------------------------------------------------

DEFAULT_SKEW = timedelta(minutes=5)


class TimeVerdict(StrEnum):
    OK = "ok"
    FUTURE = "in the future"  # refused everywhere
    BACKDATED = "earlier than the storage's write time"  # suspect: reported, not trusted


def judge_time(
    claimed: datetime,
    now: datetime,
    storage_time: datetime | None = None,
    skew: timedelta = DEFAULT_SKEW,
) -> TimeVerdict:
    """The time rule for snapshots: ``claimed`` is what the writer wrote in the header,
    ``storage_time`` what the storage says (S3 LastModified) when it says anything."""
    if claimed > now + skew:
        return TimeVerdict.FUTURE
    if storage_time is not None and claimed < storage_time - skew:
        return TimeVerdict.BACKDATED
    return TimeVerdict.OK


# --- one name, several writers (WAL squatting) ----------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One object stored under a name (or side by side with it) and its verdict."""

    key: str  # the storage name it was read from
    content_hash: bytes
    verdict: Authorisation


@dataclass(frozen=True)
class Resolution:
    chosen: Candidate | None
    squatters: tuple[Candidate, ...]


SIDE_BY_SIDE = "~"
_SUFFIX = re.compile(r"[0-9a-f]{16}")


def side_by_side_name(name: str) -> str:
    """Where a genuine object goes when an unauthorised one squats ``name``: a random suffix,
    so a squatter cannot plant that name in advance (a predictable one, such as the writer's
    fingerprint, would be squatted next); on a collision the writer draws again."""
    return f"{name}{SIDE_BY_SIDE}{secrets.token_hex(8)}"


def candidates_of(name: str, listed: Sequence[str]) -> list[str]:
    """The stored names that hold a version of ``name``: itself and its side-by-side copies."""
    prefix = name + SIDE_BY_SIDE
    return [n for n in listed if n == name or (n.startswith(prefix) and _SUFFIX.fullmatch(n[len(prefix) :]))]


def resolve_name(name: str, candidates: Sequence[Candidate]) -> Resolution:
    """Which of the objects stored for one name counts.

    Unauthorised copies (a squatter planting future WAL names) never block or replace the
    authorised one; they are returned so ``check``/``status`` can name them. Two authorised
    objects with different content are a real conflict and fail loudly.
    """
    authorised = [c for c in candidates if c.verdict]
    squatters = tuple(c for c in candidates if not c.verdict)
    if len({c.content_hash for c in authorised}) > 1:
        writers = ", ".join(sorted({str(c.verdict.writer) for c in authorised}))
        raise IntegrityError(
            f"{name} was written twice with different content by authorised writers ({writers})"
        )
    return Resolution(authorised[0] if authorised else None, squatters)
