"""Which writers a reader trusts: the root-signed writer registry and the rules every reader
applies to a signed object (issue #14; primitives in crypto/writers.py, crypto/signed.py).

A repository created with writer identities has ``root_public`` in its config and the
registry's versions under ``records/registry/<sequence, 8 digits>``. Readers load the whole
history (``verify_chain``: root-signed, numbered without gaps, each naming its predecessor)
and keep the newest verified version as a checkpoint in the local cache directory, so a
history rolled back below what this host has seen is refused. A repository whose config has
no ``root_public`` predates writer identities: ``load_trust`` returns None and readers treat
it as an unsigned legacy repository (accepted as before; ``check`` and ``status`` say so).
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifeboat import clock
from lifeboat.crypto.keys import BackupKey, RecoveryKey
from lifeboat.crypto.signed import (
    DEFAULT_SKEW,
    ObjectType,
    Signature,
    TimeVerdict,
    judge_time,
    signature_matches,
    statement,
)
from lifeboat.crypto.writers import (
    MAX_NAME,
    Authorisation,
    Checkpoint,
    Refusal,
    Registry,
    RootKey,
    SignedRegistry,
    WriterKey,
    raw_public,
    verify_chain,
    writer_id_key,
)
from lifeboat.errors import AlreadyExistsError, ConfigError, IntegrityError, LockedError, NotFoundError
from lifeboat.private import private_dir, write_private
from lifeboat.repo.format import record_name
from lifeboat.repo.storage_times import StorageTimes, load_storage_times
from lifeboat.storage.base import Storage

REGISTRY = "registry/"
CHECKPOINT_NAME = "registry-checkpoint.json"
ROOT_WRITER = "recovery side (root key)"  # what reports call an object the root key signed
LEGACY_WARNING = "unsigned legacy repository: snapshot writers are not verified (created before writer keys)"
SKEW_SETTING = "clock_skew_s"
STORED_TIME_RESOLUTION = timedelta(seconds=1)  # S3 LastModified is whole seconds
MAX_SKEW = timedelta(hours=1)  # the most a (tamperable, plaintext) config may allow


def registry_record_name(sequence: int) -> str:
    """The record of registry version ``sequence`` (under ``records/``)."""
    return f"{REGISTRY}{sequence:08d}"


def root_public_of(config: dict[str, Any]) -> bytes | None:
    """The pinned root public key (None: a legacy repository without writer identities)."""
    text = config.get("root_public")
    return base64.b64decode(text) if isinstance(text, str) else None


def skew_of(config: dict[str, Any]) -> timedelta:
    """How far in the future a snapshot's time may lie (clocks differ a little), within
    [0, MAX_SKEW]: the config is plaintext in storage, so a backup host with storage
    credentials can rewrite it. A huge skew would let its future-dated snapshots become
    "latest" and fill forget's buckets; a negative one would refuse every genuine snapshot,
    and prune would then delete their data."""
    try:
        seconds = float(config.get(SKEW_SETTING, DEFAULT_SKEW.total_seconds()))
    except (TypeError, ValueError):
        return DEFAULT_SKEW
    if seconds != seconds:  # NaN
        return DEFAULT_SKEW
    return timedelta(seconds=min(max(seconds, 0.0), MAX_SKEW.total_seconds()))


def default_writer_name() -> str:
    """This host's name, cut to what a writer name may hold."""
    allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
    name = "".join(c if c in allowed else "-" for c in socket.gethostname())[:MAX_NAME].lstrip("-.")
    return name or "backup"


def as_backup_key(base: BackupKey, writer: WriterKey) -> BackupKey:
    """A backup key file that is also ``writer``'s key: chunk ids under the writer's own id
    key (the one the registry wraps for the recovery side); the repository-wide ``id_key`` of
    ``base`` stays for the MACs of metadata (docs/design/repository-format.md, "Blob ids")."""
    return BackupKey(
        repo_id=base.repo_id,
        key_id=base.key_id,
        recovery_public=base.recovery_public,
        id_key=base.id_key,
        created=base.created,
        writer=writer.name,
        generation=writer.generation,
        signing_seed=writer.signing.private_bytes_raw(),
        chunk_id_key=writer.id_key,
    )


# -- storage --------------------------------------------------------------------------------


def store_version(storage: Storage, version: SignedRegistry, sequence: int) -> None:
    """Writes one registry version, put-if-absent: two recovery-side writers racing for the
    same sequence cannot overwrite each other (the loser fails and runs again)."""
    try:
        storage.put(record_name(registry_record_name(sequence)), version.to_bytes())
    except AlreadyExistsError:
        raise AlreadyExistsError(
            f"writer registry version {sequence} was written meanwhile", hint="run the command again"
        ) from None


def clear_orphan_registry(storage: Storage) -> None:
    """Registry versions left by a create killed before it wrote the config (the registry
    goes first): no repository exists yet, so they belong to nobody and are removed."""
    for obj in list(storage.list(record_name(REGISTRY))):
        try:
            storage.delete(obj.name)
        except NotFoundError:
            continue
        except LockedError:
            raise AlreadyExistsError(
                f"{storage.url} holds a writer registry under Object Lock but no repository config",
                hint="an earlier init was interrupted: choose another location, or wait for the lock",
            ) from None


def stored_versions(storage: Storage) -> list[bytes]:
    """Every stored registry version's bytes, in name order."""
    versions = []
    for obj in sorted(storage.list(record_name(REGISTRY)), key=lambda o: o.name):
        try:
            versions.append(storage.get(obj.name))
        except NotFoundError:
            continue
    return versions


def newest_signed(storage: Storage, root_public: bytes, repo_id: str) -> SignedRegistry:
    """The newest verified version as stored (what the next version follows)."""
    versions = stored_versions(storage)
    newest, _ = verify_chain(versions, root_public, repo_id)
    for data in versions:
        signed = SignedRegistry.from_bytes(data)
        if signed.verify(root_public, repo_id).sequence == newest.sequence:
            return signed
    raise IntegrityError("the writer registry's newest version vanished")  # pragma: no cover


# -- judging objects --------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureCheck:
    """What an object's trailer proves on its own (no registry needed, so it can be cached):
    the key that signed it, or why no key did."""

    signer: bytes | None
    refusal: Refusal | None = None

    def to_json(self) -> list[str]:
        """The cached form: [signer base64 or "", refusal or ""]."""
        signer = base64.b64encode(self.signer).decode() if self.signer else ""
        return [signer, self.refusal.value if self.refusal else ""]

    @classmethod
    def from_json(cls, data: object) -> SignatureCheck | None:
        """The check from its cached form (None when the cache entry is unusable)."""
        if not isinstance(data, list) or len(data) != 2 or not all(isinstance(x, str) for x in data):
            return None
        try:
            signer = base64.b64decode(data[0]) if data[0] else None
            return cls(signer, Refusal(data[1]) if data[1] else None)
        except ValueError:
            return None


def check_signature(
    repo_id: str, obj_type: ObjectType, name: str, asset: str | None, body: bytes, trailer: bytes | None
) -> SignatureCheck:
    """Does ``trailer`` sign this object's statement, and with which key?"""
    if trailer is None:
        return SignatureCheck(None, Refusal.UNSIGNED)
    try:
        parsed = Signature.from_bytes(trailer)
    except IntegrityError:
        return SignatureCheck(None, Refusal.MALFORMED)
    signed = statement(obj_type, repo_id, name, asset, body)
    if not signature_matches(parsed.public, signed, parsed.signature):
        return SignatureCheck(parsed.public, Refusal.BAD_SIGNATURE)
    return SignatureCheck(parsed.public)


def sign_statement(
    signing: Ed25519PrivateKey, repo_id: str, obj_type: ObjectType, name: str, asset: str | None, body: bytes
) -> bytes:
    """The 101-byte trailer that makes ``body`` an object of this writer."""
    signature = signing.sign(statement(obj_type, repo_id, name, asset, body))
    return Signature(raw_public(signing), signature).to_bytes()


@dataclass(frozen=True)
class Verdict:
    """A reader's decision on one object: the writer's name (when known) and, when refused,
    why. ``writer`` for a bad signature is only the name the trailer claims."""

    writer: str | None
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.reason is None


class Trust:
    """The verified registry and the time rule: what every reader judges objects by.
    ``times``: how the storage dates snapshot headers (repo/storage_times.py)."""

    def __init__(self, registry: Registry, skew: timedelta, times: StorageTimes | None = None) -> None:
        self.registry = registry
        self.skew = skew
        self.times = times or StorageTimes()

    def writer_name(self, public: bytes | None) -> str | None:
        """The registry's name for a signing key (the root key has its own name)."""
        if public is None:
            return None
        if public == self.registry.root_public:
            return ROOT_WRITER
        entry = self.registry.entry_for(public)
        return entry.name if entry else None

    def authorise(
        self, signer: bytes, asset: str | None, claimed: datetime | None, stored: datetime | None
    ) -> Authorisation:
        """The registry's verdict on ``signer`` writing ``asset`` at the later of the claimed
        and the stored time (either may be unknown, not both). The store dates to the whole
        second (S3 LastModified): a write it dates to the second the writer was issued in may
        have come after the issue, so it is judged at the issue, not refused as before it."""
        later = stored if claimed is None else claimed if stored is None else max(claimed, stored)
        if later is None:
            raise ValueError("neither a claimed nor a stored time to judge by")
        verdict = self.registry.authorises(signer, asset, later)
        if verdict.refusal is Refusal.NOT_YET_ISSUED and stored is not None:
            entry = self.registry.entry_for(signer)
            if entry is not None and entry.issued < stored + STORED_TIME_RESOLUTION:
                verdict = self.registry.authorises(signer, asset, max(later, entry.issued))
        return verdict

    def judge(
        self,
        check: SignatureCheck,
        asset: str | None,
        claimed: datetime,
        now: datetime | None = None,
        stored: datetime | None = None,
    ) -> Verdict:
        """Accepted only when signed by a writer the registry allows for ``asset`` at the
        object's time (or by the root key itself), not dated beyond the skew ahead, and not
        back-dated: claiming a time earlier than ``stored`` (the storage's own write time,
        S3 LastModified, when there is one) minus the skew.

        Authorisation is judged at the later of the claimed and the stored time, so a
        revoked key cannot back-date its objects into its valid window where the storage
        dates them; where it does not (a local directory), revoking the writer from the
        suspected compromise (``keys revoke-writer --since``) is the defence.
        """
        name = self.writer_name(check.signer)
        if check.refusal is not None:
            return Verdict(name, check.refusal.value)
        assert check.signer is not None
        if check.signer != self.registry.root_public:
            verdict = self.authorise(check.signer, asset, claimed, stored)
            if not verdict:
                return Verdict(verdict.writer, verdict.reason)
        moment = now or clock.now()
        ruled = judge_time(claimed, moment, stored, self.skew)
        if ruled is TimeVerdict.FUTURE:
            ahead = claimed - moment
            return Verdict(
                name, f"dated in the future ({_duration(ahead)} ahead, skew {_duration(self.skew)})"
            )
        if ruled is TimeVerdict.BACKDATED:
            assert stored is not None
            return Verdict(
                name,
                f"back-dated ({_duration(stored - claimed)} earlier than the storage wrote it at "
                f"{stored.isoformat(timespec='seconds')}, skew {_duration(self.skew)})",
            )
        return Verdict(name)


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds >= 86400:
        return f"{seconds // 86400}d"
    if seconds >= 3600:
        return f"{seconds // 3600}h"
    if seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def load_trust(storage: Storage, config: dict[str, Any], cache_dir: Path | None) -> Trust | None:
    """The trust of a repository with writer identities (None for a legacy one).

    ``cache_dir``: where this host keeps its registry checkpoint (never lowered), so a
    registry rolled back to before a revocation is refused here (IntegrityError).
    """
    root_public = root_public_of(config)
    if root_public is None:
        return None
    checkpoint = _read_checkpoint(cache_dir)
    registry, newest = verify_chain(stored_versions(storage), root_public, str(config["id"]), checkpoint)
    if checkpoint is None or newest.sequence > checkpoint.sequence:
        _write_checkpoint(cache_dir, newest)
    return Trust(registry, skew_of(config), load_storage_times(storage))


def _read_checkpoint(cache_dir: Path | None) -> Checkpoint | None:
    if cache_dir is None:
        return None
    try:
        data = json.loads((cache_dir / CHECKPOINT_NAME).read_bytes())
        return Checkpoint(int(data["sequence"]), str(data["digest"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_checkpoint(cache_dir: Path | None, checkpoint: Checkpoint) -> None:
    if cache_dir is None:
        return
    try:
        private_dir(cache_dir)
        write_private(
            cache_dir / CHECKPOINT_NAME,
            json.dumps({"sequence": checkpoint.sequence, "digest": checkpoint.digest}).encode(),
        )
    except (OSError, ConfigError):  # a read-only state dir: the checkpoint is an extra defence
        pass


def writer_id_keys(registry: Registry, chain: Sequence[RecoveryKey]) -> list[bytes]:
    """Every writer's chunk-id key, unwrapped from the registry with the recovery chain (a
    writer issued before ``keys rotate --recovery`` has its key wrapped to an older recovery
    key): what the recovery side checks blob ids of other writers' data with."""
    keys = []
    for entry in registry.writers:
        if not entry.id_key_wrapped:
            continue
        for recovery in chain:
            try:
                keys.append(writer_id_key(recovery.private, entry))
                break
            except IntegrityError:
                continue
    return keys


def first_writer(root: RootKey, base: BackupKey, name: str) -> tuple[BackupKey, SignedRegistry]:
    """The first writer (every asset) and registry version 1, for a new repository."""
    from lifeboat.crypto.writers import ANY_ASSET, issue_writer

    writer, version = issue_writer(root, name, [ANY_ASSET])
    return as_backup_key(base, writer), version
