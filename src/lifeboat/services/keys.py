"""Key rotation: a new backup key (the old one retired: it can no longer add data) and,
optionally, a new recovery key linked into the repository's recovery chain."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lifeboat.crypto.credentials import Credentials
from lifeboat.crypto.keys import BackupKey, RecoveryKey, load_backup_key
from lifeboat.errors import ConfigError, KeyError_, LifeboatError
from lifeboat.policy import Policy
from lifeboat.repo import Repository
from lifeboat.services.session import Session, reading, writing


@dataclass(frozen=True)
class EscrowSplit:
    """How the new recovery key is shared out (None: the policy's escrow settings)."""

    threshold: int | None = None
    custodians: list[str] | None = None
    passphrases: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class RecoveryRotation:
    """Where the new recovery key went to, and how `keys rotate --recovery` asked for it."""

    key_out: Path | None = None
    shares_out: Path | None = None
    split: EscrowSplit = EscrowSplit()


@dataclass
class KeyRotation:
    """What a rotation did: the backup key swap and, with --recovery, the new recovery key."""

    old_key_id: str
    keyfile: Path
    new_key_id: str = ""
    recovery_key: Path | None = None
    shares_dir: Path | None = None
    shares: list[Path] = field(default_factory=list)
    recovery_fingerprint: str | None = None
    previous_recovery_fingerprint: str | None = None
    writer: str | None = None  # a writer key's rotation: its name, generations and revocation
    old_generation: int | None = None
    new_generation: int | None = None
    revoked_at: str | None = None
    registry_version: int | None = None


def rotate(
    policy: Policy,
    creds: Credentials | None = None,
    recovery: RecoveryRotation | None = None,
    since: datetime | None = None,
) -> KeyRotation:
    """`lifeboat keys rotate [--recovery]`: snapshots written before stay restorable."""
    if recovery is not None and recovery.key_out is None and recovery.shares_out is None:
        raise ConfigError(
            "keys rotate --recovery needs somewhere to put the new recovery key",
            hint="pass --recovery-key-out FILE or --shares-out DIR",
        )
    keyfile = Path(policy.repository.keyfile)
    old = load_backup_key(keyfile)
    result = KeyRotation(old.key_id, keyfile)
    if old.writer is not None:  # a writer key: its successor is admitted by the root key
        return _rotate_writer(policy, creds or Credentials(), recovery, old, result, since)
    if since is not None:
        raise ConfigError("--since applies to writer keys only (this backup key has no writer identity)")
    recovery_public = old.recovery_public
    if recovery is not None:
        creds = creds or Credentials()
        with reading(policy, creds, purpose="keys rotate --recovery") as reader, _audited(reader):
            recovery_public = rotate_recovery(reader, recovery, result).public
    with writing(policy) as session, _audited(session):
        session.repo.ensure_writable()
        new = swap_backup_key(session.repo, keyfile, old, recovery_public)
        result.new_key_id = new.key_id
        fingerprint: dict[str, Any] = (
            {"recovery_fingerprint": result.recovery_fingerprint} if recovery else {}
        )
        session.record("keys-rotate", old_key_id=old.key_id, new_key_id=new.key_id, **fingerprint)
    return result


class _audited:
    """A failed rotation leaves its audit entry too."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, LifeboatError):
            self.session.record("keys-rotate", outcome="failed", error=exc.message)


def rotate_recovery(reader: Session, recovery: RecoveryRotation, result: KeyRotation) -> RecoveryKey:
    """New recovery key written out first, then linked into the repository's chain."""
    from lifeboat.crypto.escrow import split_recovery_key
    from lifeboat.repo.recovery_chain import current_fingerprint, link_recovery_key

    repo = reader.repo
    current = repo.keyring.recovery
    assert current is not None  # a reading session holds the recovery key
    if current.fingerprint() != current_fingerprint(repo):
        raise KeyError_(
            "only the newest recovery key can be rotated",
            hint="use the key or shares from the last 'keys rotate --recovery'",
        )
    new = RecoveryKey.generate(repo.id)
    if recovery.key_out is not None:
        new.save(recovery.key_out)
        result.recovery_key = recovery.key_out
    if recovery.shares_out is not None:
        from lifeboat.repo.escrow import reshared_key_material

        split = recovery.split
        people = split.custodians or list(reader.policy.escrow.custodians)
        result.shares = split_recovery_key(
            reader.policy,
            repo,
            new,
            recovery.shares_out,
            split.threshold,
            split.custodians,
            split.passphrases,
            key_material=reshared_key_material(repo.config, repo.keyring, people, repo),
        )
        result.shares_dir = recovery.shares_out
    # Linked last: a failure above leaves the chain as it was (the old key stays the newest).
    link_recovery_key(repo, current, new)
    result.recovery_fingerprint = new.fingerprint()
    result.previous_recovery_fingerprint = current.fingerprint()
    return new


def _rotate_writer(
    policy: Policy,
    creds: Credentials,
    recovery: RecoveryRotation | None,
    old: BackupKey,
    result: KeyRotation,
    since: datetime | None = None,
) -> KeyRotation:
    """A writer's rotation: the next generation, with all-new secrets, is admitted and the
    old generation revoked (from now, or from ``since``: the suspected compromise) in
    root-signed registry versions, then the key file swapped. Needs the recovery key or
    shares (the root key signs the registry). What the old key signs from the revocation on
    is refused by every reader, whatever the old key file is edited to say: readers judge
    the signing key, not the file's ids."""
    from lifeboat import clock
    from lifeboat.crypto.writers import raw_public, revoke_writer
    from lifeboat.repo.trust import newest_signed, store_version

    assert old.writer is not None and old.signing is not None
    at = since or clock.now()
    if at.tzinfo is None:
        raise ConfigError("--since needs a time with a zone, e.g. 2026-11-30T08:00:00+00:00")
    if at > clock.now():
        raise ConfigError(f"--since {at.isoformat()} lies in the future", hint="give the compromise time")
    with reading(policy, creds, purpose="keys rotate") as reader, _audited(reader):
        recovery_public = None
        if recovery is not None:
            recovery_public = rotate_recovery(reader, recovery, result).public
        repo = reader.repo
        trust = repo.trust()
        entry = trust.registry.entry_for(raw_public(old.signing)) if trust is not None else None
        if trust is None or entry is None:
            raise KeyError_(
                f"the key in {result.keyfile} is not in the repository's writer registry",
                hint="issue a writer key with 'lifeboat keys add-writer NAME --assets A,B --out FILE'",
            )
        current = trust.registry.current(entry.name)
        if current is not None and current.generation != entry.generation:
            raise KeyError_(
                f"{result.keyfile} holds generation {entry.generation} of writer {entry.name}; "
                f"generation {current.generation} replaced it",
                hint="rotate the newest key file of this writer",
            )
        if entry.revoked is not None:
            raise KeyError_(
                f"writer {entry.name} (generation {entry.generation}) is revoked",
                hint=f"issue it a new key with 'lifeboat keys add-writer {entry.name} --assets ...'",
            )
        if since is not None and since < clock.now():
            # the compromise window first, in its own version: issuing the successor below
            # leaves an earlier revocation as it is
            root = repo.root_key()
            version = revoke_writer(root, newest_signed(repo.storage, root.public, repo.id), entry.name, at)
            store_version(repo.storage, version, version.verify(root.public, repo.id).sequence)
            repo.trust(refresh=True)
        new, sequence, _ = issue_writer_key(repo, entry.name, list(entry.assets), recovery_public)
        new = carry_earlier_generations(repo.id, old, new)
        _replace_key_file(repo, result.keyfile, old, new)
        result.new_key_id = new.key_id
        result.writer = entry.name
        result.old_generation, result.new_generation = entry.generation, new.generation
        result.registry_version = sequence
        revoked = repo.trust(refresh=True)
        gone = revoked.registry.entry_for(entry.public) if revoked is not None else None
        result.revoked_at = gone.revoked.isoformat() if gone is not None and gone.revoked else None
        fingerprint: dict[str, Any] = (
            {"recovery_fingerprint": result.recovery_fingerprint} if recovery else {}
        )
        reader.record(
            "keys-rotate",
            old_key_id=old.key_id,
            new_key_id=new.key_id,
            writer=entry.name,
            generation=new.generation,
            revoked_generation=entry.generation,
            revoked_at=result.revoked_at,
            registry_version=sequence,
            **fingerprint,
        )
    return result


def carry_earlier_generations(repo_id: str, old: BackupKey, new: BackupKey) -> BackupKey:
    """``new`` holding the metadata keys of ``old`` and of the generations before it, so the
    host still opens what it sealed before the rotation (its snapshots, its next backup's
    parent). A thief of the old file already holds those keys; the new one gains nothing
    else, and no earlier signing key travels."""
    from dataclasses import replace

    from lifeboat.crypto.writers import raw_public
    from lifeboat.repo.sealed import metadata_key_of

    if old.signing is None:
        return new
    mine = (raw_public(old.signing), metadata_key_of(repo_id, old.signing))
    return replace(new, earlier=(*old.earlier, mine))


def swap_backup_key(repo: Repository, keyfile: Path, old: BackupKey, recovery_public: bytes) -> BackupKey:
    """The new key is recorded, then replaces the file; the old one is kept and retired."""
    from lifeboat.crypto.keys import new_backup_key
    from lifeboat.repo.records import put_key_record

    new = new_backup_key(old.repo_id, recovery_public, old.id_key)
    put_key_record(repo, new, replaces=old.key_id)
    _replace_key_file(repo, keyfile, old, new)
    return new


def _replace_key_file(repo: Repository, keyfile: Path, old: BackupKey, new: BackupKey) -> None:
    """``new`` replaces the key file; the old file is kept beside it and retired."""
    from lifeboat.repo.records import put_retired_key_record

    retired = keyfile.with_name(f"{keyfile.name}.retired-{time.strftime('%Y%m%dT%H%M%S')}")
    keyfile.rename(retired)
    new.save(keyfile)
    owner = retired.stat()
    if os.geteuid() == 0 and owner.st_uid != 0:  # the archiver's user reads it (init --owner)
        os.chown(keyfile, owner.st_uid, owner.st_gid)
    put_retired_key_record(repo, old.key_id, new)


# -- writer identities (issue #14) ---------------------------------------------------------


@dataclass
class WriterIssued:
    """A writer key written by `keys add-writer` or a rotation, and its registry entry."""

    name: str
    generation: int
    assets: list[str]
    keyfile: Path
    key_id: str
    registry_version: int
    revoked_generation: int | None = None


@dataclass
class WriterRevoked:
    """What `keys revoke-writer` did: the generation revoked and from when."""

    name: str
    generation: int
    revoked_at: str
    registry_version: int


def _check_assets(policy: Policy, assets: list[str]) -> list[str]:
    from lifeboat.crypto.writers import ANY_ASSET

    names = sorted({a.strip() for a in assets if a.strip()})
    if not names:
        raise ConfigError("--assets needs at least one asset name (or '*' for every asset)")
    unknown = [a for a in names if a != ANY_ASSET and a not in policy.assets]
    if unknown:
        raise ConfigError(
            f"unknown asset(s) {', '.join(unknown)}",
            hint=f"the policy's assets: {', '.join(sorted(policy.assets)) or 'none'}",
        )
    return names


def issue_writer_key(
    repo: Repository, name: str, assets: list[str], recovery_public: bytes | None = None
) -> tuple[BackupKey, int, int | None]:
    """A new writer key (or the next generation of ``name``, the old one revoked now), its
    registry version stored; returns the key (not saved), the version and the revoked
    generation, if any."""
    from lifeboat.crypto.keys import new_backup_key
    from lifeboat.crypto.writers import issue_writer
    from lifeboat.repo.records import put_key_record
    from lifeboat.repo.trust import as_backup_key, newest_signed, root_public_of, store_version

    root = repo.root_key()
    previous = newest_signed(repo.storage, root_public_of(repo.config) or b"", repo.id)
    old = previous.verify(root.public, repo.id).current(name)
    writer, version = issue_writer(root, name, assets, previous)
    sequence = version.verify(root.public, repo.id).sequence
    current_public, id_key = repo.writer_material()
    key = as_backup_key(new_backup_key(repo.id, recovery_public or current_public, id_key), writer)
    store_version(repo.storage, version, sequence)
    put_key_record(repo, key)
    repo.trust(refresh=True)
    revoked = old.generation if old is not None and old.revoked is None else None
    return key, sequence, revoked


def add_writer(policy: Policy, creds: Credentials, name: str, assets: list[str], out: Path) -> WriterIssued:
    """`lifeboat keys add-writer NAME --assets A,B --out FILE` (recovery side)."""
    from lifeboat.crypto.keys import write_secret_file
    from lifeboat.crypto.writers import check_writer_name

    check_writer_name(name)
    scope = _check_assets(policy, assets)
    if os.path.lexists(out):
        raise ConfigError(f"{out} already exists", hint="a writer key is never written over another file")
    with reading(policy, creds, purpose="keys add-writer") as session, Audited(session, "keys-add-writer"):
        key, sequence, revoked = issue_writer_key(session.repo, name, scope)
        write_secret_file(out, json.dumps(key.to_json(), indent=2).encode() + b"\n")
        session.record(
            "keys-add-writer",
            writer=name,
            generation=key.generation,
            assets=scope,
            key_id=key.key_id,
            registry_version=sequence,
        )
    return WriterIssued(name, key.generation, scope, out, key.key_id, sequence, revoked)


def revoke_writer_key(
    policy: Policy, creds: Credentials, name: str, since: datetime | None = None
) -> WriterRevoked:
    """`lifeboat keys revoke-writer NAME [--since TIME]`: what the writer's current key signs
    from ``since`` (default now; earlier: the suspected compromise) on is refused."""
    from lifeboat import clock
    from lifeboat.crypto.writers import revoke_writer
    from lifeboat.repo.trust import newest_signed, store_version

    if since is not None and since.tzinfo is None:
        raise ConfigError("--since needs a time with a zone, e.g. 2026-11-30T08:00:00+00:00")
    with (
        reading(policy, creds, purpose="keys revoke-writer") as session,
        Audited(session, "keys-revoke-writer"),
    ):
        # "now" once the repository is open: the recovery key's use, logged (and copied,
        # signed by this very writer when it is the policy's) while opening, predates it
        at = since or clock.now()
        repo = session.repo
        root = repo.root_key()
        previous = newest_signed(repo.storage, root.public, repo.id)
        entry = previous.verify(root.public, repo.id).current(name)
        if entry is None:
            raise KeyError_(
                f"no writer named {name} in the registry", hint="list them with 'lifeboat keys writers'"
            )
        version = revoke_writer(root, previous, name, at)
        registry = version.verify(root.public, repo.id)
        store_version(repo.storage, version, registry.sequence)
        repo.trust(refresh=True)
        revoked = registry.current(name)
        assert revoked is not None and revoked.revoked is not None
        when = revoked.revoked.isoformat(timespec="seconds")
        session.record(
            "keys-revoke-writer",
            writer=name,
            generation=entry.generation,
            revoked_at=when,
            registry_version=registry.sequence,
        )
    return WriterRevoked(name, entry.generation, when, registry.sequence)


def list_writers(policy: Policy) -> list[dict[str, Any]]:
    """The registry's writers as verified against the pinned root key (backup key only)."""
    from lifeboat import runtime

    repo = runtime.open_for_write(policy)
    try:
        trust = repo.trust()
        if trust is None:
            return []
        return [
            {
                "name": w.name,
                "generation": w.generation,
                "assets": list(w.assets),
                "issued": w.issued.isoformat(timespec="seconds"),
                "revoked": w.revoked.isoformat(timespec="seconds") if w.revoked else None,
            }
            for w in trust.registry.writers
        ]
    finally:
        repo.close()


class Audited:
    """A failed writer operation leaves its audit entry too."""

    def __init__(self, session: Session, operation: str) -> None:
        self.session = session
        self.operation = operation

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, LifeboatError):
            self.session.record(self.operation, outcome="failed", error=exc.message)
