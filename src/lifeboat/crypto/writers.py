"""Writers as identities: per-writer keys and the root-signed writer registry (issue #14).

* The **root signing key** (Ed25519) is derived from the repository's first recovery key
  (the root of the recovery chain, repo/recovery_chain.py), so whoever holds the recovery
  key, or M custodians' shares, also holds the root key; no writer ever does. Its public
  key is the repository's trust anchor (pinned in ``config``).
* A **writer key** is what one backup host holds: its Ed25519 signing key, its own
  chunk-id key (dedup stays inside one writer, so a host can only probe data it already
  has) and its own metadata key (it can read back its own snapshot headers and indexes for
  dedup and parents, not another writer's).
* The **registry** lists the writers (public signing key, allowed assets, issued/revoked
  times, key generation). Each version is signed by the root key, carries a sequence number
  and the digest of the version before it, so a reader that has seen version N refuses
  anything older or any other history (rollback and fork detection).

Nothing here touches storage: callers store the bytes ``SignedRegistry.to_bytes`` returns.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lifeboat import clock
from lifeboat.crypto.envelope import unwrap_key, wrap_key
from lifeboat.crypto.keys import RecoveryKey, write_secret_file
from lifeboat.errors import IntegrityError, KeyError_

WRITER_KEY_TYPE = "lifeboat-writer-key"
REGISTRY_TYPE = "lifeboat-writer-registry"
ROOT_KEY_INFO = b"lifeboat/root-signing/v1"
REGISTRY_DOMAIN = b"lifeboat/registry/v1\x00"
# Contexts of the writer's secrets wrapped to the recovery key inside the registry: the
# recovery side needs a writer's id key to check blob ids when it reads that writer's data.
ID_KEY_CONTEXT = b"writer-id-key"
# A writer allowed this "asset" may write every asset: the first writer ``init`` issues (one
# host backing up everything it knows about); ``keys add-writer --assets`` scopes the others.
ANY_ASSET = "*"
# A name shows up in logs, audit entries and object names: keep it to a safe alphabet.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
MAX_NAME = 64


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.b64decode(text.encode(), validate=True)


def canonical_json(payload: Any) -> bytes:
    """The one byte string a JSON value signs as (sorted keys, no spaces, ASCII only)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes_raw()


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    # to the microsecond, as snapshot times are: a registry to the second revoked a rotated
    # key from the start of its second, refusing the backup it had signed just before
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(text: object) -> datetime:
    if not isinstance(text, str):
        raise ValueError("not a time")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("time without a zone")
    return moment


def check_writer_name(name: str) -> None:
    if not name or len(name) > MAX_NAME or not set(name) <= _NAME_CHARS or name[0] in "-.":
        raise KeyError_(
            f"writer name {name[:MAX_NAME]!r} is not allowed",
            hint=f"use 1-{MAX_NAME} letters, digits, '-', '_' or '.', not starting with '-' or '.'",
        )


# --- the root key ---------------------------------------------------------------------


@dataclass(frozen=True)
class RootKey:
    """The repository's root signing key: signs writer registries, nothing else."""

    repo_id: str
    recovery_public: bytes
    signing: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def derive(cls, repo_id: str, root_recovery_secret: bytes, recovery_public: bytes) -> RootKey:
        """The root key of a repository from the secret of its *first* recovery key.

        The first key is the end of the recovery chain, reachable from every later recovery
        key and from M-of-N shares, so the root public key pinned at ``init`` never changes.
        ``recovery_public`` is the *current* recovery public key (writer secrets are wrapped
        to it). The repository id is the HKDF salt, so two repositories never share a root.
        """
        if len(root_recovery_secret) != 32:
            raise KeyError_("recovery secret has the wrong length")
        seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=repo_id.encode(), info=ROOT_KEY_INFO).derive(
            root_recovery_secret
        )
        return cls(repo_id, recovery_public, Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_chain(cls, repo_id: str, chain: Sequence[RecoveryKey]) -> RootKey:
        """The root key from a resolved recovery chain (newest key first, the repository's
        first key last, as repo/recovery_chain.py ``resolve_chain`` returns it)."""
        if not chain:
            raise KeyError_("no recovery key given")
        return cls.derive(repo_id, chain[-1].secret, chain[0].public)

    @property
    def public(self) -> bytes:
        return raw_public(self.signing)


# --- writer keys ------------------------------------------------------------------------


@dataclass(frozen=True)
class WriterKey:
    """What one backup host holds: sign its objects, id its chunks, read its own metadata."""

    repo_id: str
    name: str
    generation: int
    signing: Ed25519PrivateKey = field(repr=False)
    id_key: bytes = field(repr=False)
    metadata_key: bytes = field(repr=False)
    recovery_public: bytes
    root_public: bytes
    created: str

    @property
    def public(self) -> bytes:
        return raw_public(self.signing)

    def sign(self, message: bytes) -> bytes:
        return self.signing.sign(message)

    def to_json(self) -> dict[str, Any]:
        seed = self.signing.private_bytes_raw()
        return {
            "type": WRITER_KEY_TYPE,
            "version": 2,
            "repo_id": self.repo_id,
            "name": self.name,
            "generation": self.generation,
            "signing_key": _b64(seed),
            "id_key": _b64(self.id_key),
            "metadata_key": _b64(self.metadata_key),
            "recovery_public": _b64(self.recovery_public),
            "root_public": _b64(self.root_public),
            "created": self.created,
        }

    def save(self, path: Path, *, overwrite: bool = False) -> None:
        write_secret_file(path, json.dumps(self.to_json(), indent=2).encode() + b"\n", overwrite=overwrite)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WriterKey:
        if data.get("type") != WRITER_KEY_TYPE or data.get("version") != 2:
            raise ValueError("not a writer key")
        keys = [
            _unb64(data[k])
            for k in ("signing_key", "id_key", "metadata_key", "recovery_public", "root_public")
        ]
        if any(len(k) != 32 for k in keys):
            raise ValueError("key of the wrong length")
        return cls(
            repo_id=str(data["repo_id"]),
            name=str(data["name"]),
            generation=int(data["generation"]),
            signing=Ed25519PrivateKey.from_private_bytes(keys[0]),
            id_key=keys[1],
            metadata_key=keys[2],
            recovery_public=keys[3],
            root_public=keys[4],
            created=str(data.get("created", "")),
        )


def load_writer_key(path: Path) -> WriterKey:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyError_(f"writer key file {path} does not exist") from None
    except OSError as exc:
        raise KeyError_(f"cannot read writer key file {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError
        if data.get("type") != WRITER_KEY_TYPE:
            raise KeyError_(f"{path} is not a lifeboat writer key file (it is {data.get('type')!r})")
        return WriterKey.from_json(data)
    except (ValueError, KeyError, TypeError):
        raise KeyError_(f"writer key file {path} is damaged") from None


# --- the registry -------------------------------------------------------------------------


class Refusal(StrEnum):
    """Why an object's writer is not trusted; the value is what reports show."""

    UNSIGNED = "unsigned"
    MALFORMED = "malformed signature"
    BAD_SIGNATURE = "signature does not match"
    UNKNOWN_WRITER = "writer not in the registry"
    REVOKED = "writer revoked"
    NOT_YET_ISSUED = "signed before the writer was issued"
    ASSET_NOT_ALLOWED = "writer may not write this asset"


@dataclass(frozen=True)
class Authorisation:
    """The verdict on one writer for one asset at one time; true only when allowed."""

    writer: str | None
    refusal: Refusal | None = None

    def __bool__(self) -> bool:
        return self.refusal is None

    @property
    def reason(self) -> str:
        return "authorised" if self.refusal is None else self.refusal.value


@dataclass(frozen=True)
class WriterEntry:
    name: str
    generation: int
    public: bytes
    assets: tuple[str, ...]
    issued: datetime
    revoked: datetime | None = None
    id_key_wrapped: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "generation": self.generation,
            "public": _b64(self.public),
            "assets": sorted(self.assets),
            "issued": _iso(self.issued),
            "revoked": _iso(self.revoked) if self.revoked else None,
            "id_key_wrapped": _b64(self.id_key_wrapped),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WriterEntry:
        public = _unb64(data["public"])
        if len(public) != 32:
            raise ValueError("public key of the wrong length")
        assets = data["assets"]
        if not isinstance(assets, list) or not all(isinstance(a, str) for a in assets):
            raise ValueError("assets must be a list of names")
        return cls(
            name=str(data["name"]),
            generation=int(data["generation"]),
            public=public,
            assets=tuple(assets),
            issued=_parse_time(data["issued"]),
            revoked=_parse_time(data["revoked"]) if data.get("revoked") else None,
            id_key_wrapped=_unb64(data.get("id_key_wrapped", "")),
        )


@dataclass(frozen=True)
class Checkpoint:
    """The newest registry version a reader has verified: kept locally, never lowered."""

    sequence: int
    digest: str


@dataclass(frozen=True)
class Registry:
    """One version of the writer registry (unsigned content; see ``SignedRegistry``)."""

    repo_id: str
    root_public: bytes
    sequence: int
    previous: str  # hex digest of the signed version before, "" for version 1
    time: datetime
    writers: tuple[WriterEntry, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "type": REGISTRY_TYPE,
            "version": 1,
            "repo_id": self.repo_id,
            "root_public": _b64(self.root_public),
            "sequence": self.sequence,
            "previous": self.previous,
            "time": _iso(self.time),
            "writers": [w.to_json() for w in self.writers],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Registry:
        if data.get("type") != REGISTRY_TYPE or data.get("version") != 1:
            raise ValueError("not a writer registry")
        return cls(
            repo_id=str(data["repo_id"]),
            root_public=_unb64(data["root_public"]),
            sequence=int(data["sequence"]),
            previous=str(data["previous"]),
            time=_parse_time(data["time"]),
            writers=tuple(WriterEntry.from_json(w) for w in data["writers"]),
        )

    def entry_for(self, public: bytes) -> WriterEntry | None:
        return self._by_public.get(public)

    @cached_property
    def _by_public(self) -> dict[bytes, WriterEntry]:
        """Each key's first entry. Every header a listing judges looks its signer up, and a
        fleet registry holds a writer per host: a scan per lookup cost 80 ms per 10,000
        headers at 100 writers. Public keys are public: no constant-time compare needed."""
        by_public: dict[bytes, WriterEntry] = {}
        for entry in self.writers:
            by_public.setdefault(entry.public, entry)
        return by_public

    def current(self, name: str) -> WriterEntry | None:
        """The newest generation of a writer name (revoked or not)."""
        named = [w for w in self.writers if w.name == name]
        return max(named, key=lambda w: w.generation) if named else None

    def authorises(self, writer_public: bytes, asset: str | None, at_time: datetime) -> Authorisation:
        """May this key write ``asset`` at ``at_time``? ``asset`` None: any asset (indexes).

        ``at_time`` must be a time the writer cannot choose on its own where one exists (the
        storage's write time, S3 LastModified); a claimed time alone lets a revoked key
        back-date, which is why revocation takes an ``at`` (the suspected compromise).
        """
        if at_time.tzinfo is None:
            raise ValueError("at_time must be timezone-aware")
        entry = self.entry_for(writer_public)
        if entry is None:
            return Authorisation(None, Refusal.UNKNOWN_WRITER)
        if at_time < entry.issued:
            return Authorisation(entry.name, Refusal.NOT_YET_ISSUED)
        if entry.revoked is not None and at_time >= entry.revoked:
            return Authorisation(entry.name, Refusal.REVOKED)
        if asset is not None and asset not in entry.assets and ANY_ASSET not in entry.assets:
            return Authorisation(entry.name, Refusal.ASSET_NOT_ALLOWED)
        return Authorisation(entry.name)


def _registry_message(body: bytes) -> bytes:
    return REGISTRY_DOMAIN + body


@dataclass(frozen=True)
class SignedRegistry:
    """A registry version as stored: its canonical body and the root's signature over it."""

    body: bytes
    signature: bytes

    @property
    def digest(self) -> str:
        """What the next version's ``previous`` names; covers body and signature."""
        return hashlib.sha256(REGISTRY_DOMAIN + self.to_bytes()).hexdigest()

    def to_bytes(self) -> bytes:
        return canonical_json({"registry": self.body.decode(), "signature": _b64(self.signature)})

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedRegistry:
        try:
            outer = json.loads(data)
            return cls(str(outer["registry"]).encode(), _unb64(outer["signature"]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise IntegrityError("writer registry is damaged") from None

    def verify(self, root_public: bytes, repo_id: str | None = None) -> Registry:
        """The registry, once its signature checks out under the pinned root public key."""
        try:
            Ed25519PublicKey.from_public_bytes(root_public).verify(
                self.signature, _registry_message(self.body)
            )
        except (InvalidSignature, ValueError):
            raise IntegrityError("writer registry is not signed by this repository's root key") from None
        try:
            registry = Registry.from_json(json.loads(self.body))
        except (ValueError, KeyError, TypeError):
            raise IntegrityError("writer registry is damaged") from None
        if not hmac.compare_digest(registry.root_public, root_public):
            raise IntegrityError("writer registry names another root key")
        if repo_id is not None and registry.repo_id != repo_id:
            raise IntegrityError("writer registry belongs to another repository")
        return registry


def sign_registry(root: RootKey, registry: Registry) -> SignedRegistry:
    body = canonical_json(registry.to_json())
    return SignedRegistry(body, root.signing.sign(_registry_message(body)))


def _next(root: RootKey, previous: SignedRegistry | None, writers: Iterable[WriterEntry]) -> SignedRegistry:
    """The version after ``previous`` (or the first), signed; the root's own view is checked."""
    if previous is None:
        sequence, prev_digest = 1, ""
    else:
        sequence, prev_digest = previous.verify(root.public, root.repo_id).sequence + 1, previous.digest
    registry = Registry(root.repo_id, root.public, sequence, prev_digest, clock.now(), tuple(writers))
    return sign_registry(root, registry)


def empty_registry(root: RootKey) -> SignedRegistry:
    return _next(root, None, ())


def issue_writer(
    root: RootKey,
    name: str,
    assets: Sequence[str],
    registry: SignedRegistry | None = None,
    *,
    at: datetime | None = None,
) -> tuple[WriterKey, SignedRegistry]:
    """A fresh writer key and the registry version that admits it.

    Issuing a name that already has a key is a rotation: the new key gets the next
    generation with all-new secrets, and the old one is revoked from ``at`` (default now).
    """
    check_writer_name(name)
    if not assets or any(not a for a in assets):
        raise KeyError_(f"writer {name} must be allowed at least one asset")
    now = at or clock.now()
    current = registry.verify(root.public, root.repo_id) if registry else None
    writers = list(current.writers) if current else []
    old = current.current(name) if current else None
    generation = old.generation + 1 if old else 1
    if old is not None and old.revoked is None:
        writers[writers.index(old)] = replace(old, revoked=now)
    key = WriterKey(
        repo_id=root.repo_id,
        name=name,
        generation=generation,
        signing=Ed25519PrivateKey.generate(),
        id_key=secrets.token_bytes(32),
        metadata_key=secrets.token_bytes(32),
        recovery_public=root.recovery_public,
        root_public=root.public,
        created=_iso(now),
    )
    entry = WriterEntry(
        name=name,
        generation=generation,
        public=key.public,
        assets=tuple(sorted(set(assets))),
        issued=now,
        id_key_wrapped=wrap_key(root.recovery_public, key.id_key, ID_KEY_CONTEXT + b"/" + key.public),
    )
    writers.append(entry)
    return key, _next(root, registry, writers)


def revoke_writer(root: RootKey, registry: SignedRegistry, name: str, at: datetime) -> SignedRegistry:
    """The registry version in which ``name``'s current key signs nothing from ``at`` on.

    ``at`` may lie in the past (the suspected compromise): objects the stolen key back-dates
    into that window are refused too. An earlier revocation time is never moved later.
    """
    current = registry.verify(root.public, root.repo_id)
    entry = current.current(name)
    if entry is None:
        raise KeyError_(f"no writer named {name} in the registry")
    revoked = min(entry.revoked, at) if entry.revoked else at
    writers = [replace(w, revoked=revoked) if w is entry else w for w in current.writers]
    return _next(root, registry, writers)


def grant_assets(root: RootKey, registry: SignedRegistry, name: str, assets: Sequence[str]) -> SignedRegistry:
    """The registry version in which ``name``'s current key may write exactly ``assets``
    (widening or narrowing; a narrowed asset is refused for every later check, whatever
    the object's time, since the registry keeps no history of scopes)."""
    if not assets or any(not a for a in assets):
        raise KeyError_(f"writer {name} must be allowed at least one asset")
    current = registry.verify(root.public, root.repo_id)
    entry = current.current(name)
    if entry is None:
        raise KeyError_(f"no writer named {name} in the registry")
    if entry.revoked is not None:
        raise KeyError_(f"writer {name} is revoked", hint=f"issue a new key: keys add-writer {name}")
    scoped = replace(entry, assets=tuple(sorted(set(assets))))
    return _next(root, registry, [scoped if w is entry else w for w in current.writers])


def verify_chain(
    versions: Sequence[bytes],
    root_public: bytes,
    repo_id: str,
    checkpoint: Checkpoint | None = None,
) -> tuple[Registry, Checkpoint]:
    """The newest registry of a stored history, and the checkpoint to keep for next time.

    Every version must be signed by the root, numbered 1..N without gaps or duplicates, and
    name its predecessor's digest. A checkpoint from an earlier run must still be part of
    the history: a missing newer version (rollback) or a different one (fork) is refused.
    """
    if not versions:
        raise IntegrityError("the repository has no writer registry")
    signed = [SignedRegistry.from_bytes(v) for v in versions]
    parsed = sorted(((s.verify(root_public, repo_id), s) for s in signed), key=lambda pair: pair[0].sequence)
    previous_digest = ""
    digests: dict[int, str] = {}
    for expected, (registry, version) in enumerate(parsed, start=1):
        if registry.sequence != expected:
            raise IntegrityError(
                f"writer registry history is broken at version {expected} "
                f"(found {registry.sequence}: a version is missing or duplicated)"
            )
        if registry.previous != previous_digest:
            raise IntegrityError(f"writer registry version {expected} does not follow version {expected - 1}")
        previous_digest = digests[expected] = version.digest
    newest = parsed[-1][0]
    if checkpoint is not None:
        if checkpoint.sequence > newest.sequence:
            raise IntegrityError(
                f"writer registry rolled back: version {checkpoint.sequence} was seen before, "
                f"the repository now ends at version {newest.sequence}"
            )
        if not hmac.compare_digest(digests[checkpoint.sequence], checkpoint.digest):
            raise IntegrityError(
                f"writer registry forked: version {checkpoint.sequence} differs from the one seen before"
            )
    return newest, Checkpoint(newest.sequence, digests[newest.sequence])


def writer_id_key(recovery: X25519PrivateKey, entry: WriterEntry) -> bytes:
    """A writer's chunk-id key as the recovery side reads it (to check that writer's blob ids)."""
    return unwrap_key(recovery, entry.id_key_wrapped, ID_KEY_CONTEXT + b"/" + entry.public)
