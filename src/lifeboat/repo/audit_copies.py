"""Audit copies: each local audit line stored as ``audit/<seq, 12 digits>-<16 hex of its
hash>``, its chain fields public and the line sealed for its signer and the recovery side,
signed (101-byte trailer, statement type ``audit``, no asset) by the key this handle signs
with (the writer's, or the root key when opened with the recovery key alone), put-once and
under Object Lock when the repository has it (docs/design/repository-format.md, "Audit
copies"; crypto/audit_anchor.py holds the layout and compares copies with the local log).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifeboat import clock
from lifeboat.crypto.audit_anchor import (
    RECOVERY_SIDE,
    SIGNED_SUFFIX,
    Anchored,
    Unjudged,
    anchor_name,
    parse_entry,
    read_anchor,
    same_copy,
    sealed_copy,
)
from lifeboat.crypto.signed import ObjectType
from lifeboat.crypto.writers import raw_public
from lifeboat.errors import AlreadyExistsError, IntegrityError, KeyError_, NotFoundError
from lifeboat.repo.sealed import MetadataCodec
from lifeboat.repo.trust import Trust, root_public_of, sign_statement
from lifeboat.storage.base import Storage

PREFIX = "audit/"
FETCH_WORKERS = 8


class AuditHandle(Protocol):
    """What audit copies need of an open repository (``Repository`` is one)."""

    storage: Storage
    config: dict[str, Any]
    id: str
    signing: Ed25519PrivateKey | None

    @property
    def metadata(self) -> MetadataCodec:
        """How this handle seals and opens metadata (its writer's key, or the recovery side's)."""
        ...

    def trust(self, refresh: bool = False) -> Trust | None:
        """The verified writer registry (None: an unsigned legacy repository)."""
        ...


def audit_identity(repo: AuditHandle, claimed: tuple[bytes, str] | None = None) -> str | None:
    """Who this handle's audit copies are signed by: the writer's name in the signed
    registry, ``recovery side`` for the root key, None when it signs nothing. ``claimed``
    (public key, name), from the key file: the name when it is this handle's key, without
    reading the registry (`audit verify` checks every copy's name against its signer)."""
    root = root_public_of(repo.config)
    if repo.signing is None or root is None:
        return None
    public = raw_public(repo.signing)
    if public == root:
        return RECOVERY_SIDE
    if claimed is not None and claimed[0] == public:
        return claimed[1]
    trust = repo.trust()
    entry = trust.registry.entry_for(public) if trust is not None else None
    return entry.name if entry is not None else None


def put_audit_copy(repo: AuditHandle, line: bytes) -> str:
    """Store one local audit line as its signed copy; returns the object name. A copy
    of the same entry already there, signed by this writer (any generation) or the root key,
    counts as stored (a retry, or a log copied again from its start). Raises when it
    cannot be signed or the name holds something else."""
    line = line.rstrip(b"\n")
    entry = parse_entry(line)
    name = anchor_name(entry)
    if root_public_of(repo.config) is None:
        stored = line + b"\n"  # a legacy repository: no keys to sign with, copied as before
    elif repo.signing is None:
        raise KeyError_("this key has no writer identity: audit copies cannot be signed")
    else:
        body = sealed_copy(entry, repo.metadata.seal_named(name, line))
        stored = body + sign_statement(repo.signing, repo.id, ObjectType.AUDIT, name, None, body)
    for candidate in (name, name + SIGNED_SUFFIX):
        try:
            repo.storage.put(candidate, stored)
            return candidate
        except AlreadyExistsError:
            existing = repo.storage.get(candidate)
            if same_copy(stored, existing, candidate, repo.id, line, _signers(repo)):
                return candidate
            if candidate == name and existing == line + b"\n" and stored != existing:
                continue  # an unsigned copy from before copies were signed: sign beside it
            raise IntegrityError(f"{candidate} already exists with other content") from None
    raise IntegrityError(f"{name} already exists with other content")  # pragma: no cover


def _signers(repo: AuditHandle) -> set[bytes]:
    """Whose copy of an entry counts as stored: this writer's (any generation) and the root
    key's (entries a recovery-side process logged in this host's log, e.g. `keys rotate`)."""
    root = root_public_of(repo.config)
    return {*repo.metadata.own_publics, *([root] if root is not None else [])}


@dataclass(frozen=True)
class RefusedCopy:
    """An object under ``audit/`` that no writer of this repository signed."""

    name: str
    writer: str | None
    reason: str


@dataclass(frozen=True)
class AuditCopies:
    """The signed copies a reader accepted, the ones it refused (reported), and sealed
    copies of writers revoked since that only the recovery side can judge."""

    accepted: list[Anchored]
    refused: list[RefusedCopy]
    unjudged: list[Unjudged]


def audit_copies(repo: AuditHandle) -> AuditCopies:
    """Every object under ``audit/``, judged against the writer registry (an IntegrityError
    for a legacy repository: its copies are not signed)."""
    trust = repo.trust()
    if trust is None:
        raise IntegrityError("this repository predates signed audit copies (no writer registry)")
    now = clock.now()
    accepted: list[Anchored] = []
    refused: list[RefusedCopy] = []
    unjudged: list[Unjudged] = []
    names = sorted(obj.name for obj in repo.storage.list(PREFIX))

    def fetch(name: str) -> bytes | None:
        try:
            return repo.storage.get(name)
        except NotFoundError:
            return None

    with ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:  # one small GET per entry
        fetched = list(pool.map(fetch, names))
    for name, stored in zip(names, fetched, strict=True):
        if stored is None:
            continue
        verdict = read_anchor(name, stored, trust.registry, open_line=repo.metadata.open_named, now=now)
        if isinstance(verdict, Anchored):
            accepted.append(verdict)
        elif isinstance(verdict, Unjudged):
            unjudged.append(verdict)
        else:
            refused.append(RefusedCopy(name, verdict.writer, verdict.reason))
    return AuditCopies(accepted, refused, unjudged)
