"""Builds the objects a command needs from the policy: storage, repository, audit log.

Commands, the daemon and drills all open the repository the same way through here, so
keys, caches and the audit trail are handled in one place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lifeboat.audit import AuditLog
from lifeboat.crypto.credentials import Credentials
from lifeboat.crypto.keys import RecoveryKey, load_backup_key
from lifeboat.errors import ConfigError, LifeboatError
from lifeboat.private import private_dir, private_opener, state_dir_mode
from lifeboat.repo import Repository
from lifeboat.storage import open_storage
from lifeboat.storage.base import Storage

if TYPE_CHECKING:
    from lifeboat.crypto.escrow import ParsedShare
    from lifeboat.policy import Policy
    from lifeboat.repo import KeepRules
    from lifeboat.repo.local_cache import CacheSeal
    from lifeboat.repo.records import RecordsView


class Location(Protocol):
    """Where repository bytes live: the policy's [repository] or [copies.NAME]."""

    @property
    def url(self) -> str: ...
    @property
    def endpoint_url(self) -> str | None: ...
    @property
    def lock_days(self) -> int | None: ...
    @property
    def region(self) -> str | None: ...
    @property
    def stall_timeout(self) -> timedelta: ...
    @property
    def trust_endpoint(self) -> bool: ...
    @property
    def profile(self) -> str | None: ...
    @property
    def role_arn(self) -> str | None: ...


class RepositoryLocation(Location, Protocol):
    @property
    def keyfile(self) -> Path: ...


class Settings(Protocol):
    """What opening the repository for writing and keeping the audit log take from the
    policy: a validated `Policy`, or the slice of one the fast commands keep cached
    (`cli/policy_slice.py`: a `wal push` must not pay for pydantic once per WAL segment)."""

    @property
    def repository(self) -> RepositoryLocation: ...
    @property
    def state_dir(self) -> Path: ...


class KeyedLocation(RepositoryLocation, Protocol):
    @property
    def recovery_key(self) -> Path | None: ...


class _Deployment(Protocol):
    @property
    def mode(self) -> str: ...


class ReadSettings(Settings, Protocol):
    """What opening the repository for reading takes besides: where the recovery key is
    and how many custodians' shares unlock it (`crypto.unlock.UnlockPolicy`)."""

    @property
    def repository(self) -> KeyedLocation: ...
    @property
    def deployment(self) -> _Deployment: ...
    def escrow_threshold(self) -> int: ...


def storage_for(policy: Settings) -> Storage:
    return open_location(policy.repository)


def open_location(location: Location) -> Storage:
    """The storage at a repository location ([repository] or one of [copies.NAME])."""
    return open_storage(
        str(location.url),
        endpoint_url=location.endpoint_url,
        lock_days=location.lock_days,
        region=location.region,
        stall_timeout=location.stall_timeout.total_seconds(),
        trust_endpoint=location.trust_endpoint,
        profile=location.profile,
        role_arn=location.role_arn,
    )


@contextmanager
def drill_copy_records(
    policy: Policy | Callable[[], Policy], copies: Iterable[str] | None = None
) -> Iterator[dict[str, Callable[[], RecordsView]]]:
    """The plaintext records of each copy the policy's drills read (or of ``copies``),
    opened when called and closed on leaving: their drill-key records are trusted too
    (drills/signing_key.py ``trusted_drill_keys``). ``policy`` may be a callable, asked only
    when a copy is opened (status's fast path has no validated policy until then)."""
    from lifeboat.repo.records import RecordsView

    @functools.cache
    def validated() -> Policy:  # loaded once, and only when needed
        return policy() if callable(policy) else policy

    if copies is None:
        copies = {d.repository for d in validated().drills.values() if d.repository}
    with ExitStack() as stack:

        def opener(name: str) -> Callable[[], RecordsView]:
            def records() -> RecordsView:
                storage = open_location(validated().copy_config(name))
                stack.callback(storage.close)
                return RecordsView(storage, config={})  # drill-key records need no config

            return records

        yield {name: opener(name) for name in sorted(copies)}


def state_dir(policy: Settings) -> Path:
    """The state dir, created private (see lifeboat.private)."""
    try:
        return private_dir(Path(policy.state_dir), state_dir_mode(), named=True)
    except ConfigError as exc:
        raise _state_not_writable(policy, exc.message) from None


def cache_dir(policy: Settings) -> Path | None:
    """The local cache, or None when the state dir cannot take it: a cache only saves
    reads, so a read-only state dir slows commands down but stops none (commands that
    record something refuse it through ``require_writable_state``)."""
    try:
        return private_dir(state_dir(policy) / "cache")
    except ConfigError:
        return None


def _state_not_writable(policy: Settings, why: str) -> ConfigError:
    cause = why.rsplit(": ", 1)[-1]
    return ConfigError(
        f"state directory {policy.state_dir} is not writable ({cause}); nothing was changed",
        hint="make it writable, or set [state] dir in the policy to a writable directory",
    )


def require_writable_state(policy: Settings) -> Path:
    """The state directory (audit log, run history, cache) must take writes before any
    command changes something: a snapshot committed without its audit entry is history lost."""
    state = Path(policy.state_dir)
    try:
        state.mkdir(parents=True, exist_ok=True)
        # what the audit entry needs, no more: PostgreSQL's user may append to the log in a
        # directory it cannot otherwise write; a link or FIFO planted there is refused now,
        # before anything is changed (private_opener)
        with open(state / "audit.jsonl", "ab", opener=private_opener):
            pass
    except OSError as exc:
        raise ConfigError(
            f"state directory {state} is not writable ({exc.strerror or exc}); nothing was changed",
            hint="make it writable, or set [state] dir in the policy to a writable directory",
        ) from None
    return state


def audit_log(policy: Settings, repo: Repository | None = None) -> AuditLog:
    """The audit log, checked writable now: callers take it before the work they record.
    Every entry not yet in the repository is stored there as a signed copy
    (repo/audit_copies.py), through ``repo`` or, without one, through a handle opened with
    the policy's key file when an entry is appended (no key file: the entries wait for the
    next operation that has a repository). ``actor`` is the signing identity: the writer's
    name in the registry (``recovery side`` for the root key), or the key file's writer."""
    from lifeboat.repo.audit_copies import audit_identity, put_audit_copy

    require_writable_state(policy)
    path = state_dir(policy) / "audit.jsonl"
    if repo is None:
        keyfile = Path(policy.repository.keyfile)
        if not keyfile.is_file():
            return AuditLog(path)
        opened: list[Repository] = []

        def mirror_by_keyfile(_name: str, line: bytes) -> None:
            if not opened:
                opened.append(open_for_write(policy))
            put_audit_copy(opened[0], line)

        return AuditLog(path, mirror=mirror_by_keyfile, identity=lambda: _keyfile_writer(keyfile))
    handle = repo

    def mirror(_name: str, line: bytes) -> None:
        put_audit_copy(handle, line)

    def identity() -> str | None:
        return audit_identity(handle, _keyfile_identity(Path(policy.repository.keyfile)))

    return AuditLog(path, mirror=mirror, identity=identity)


def _keyfile_writer(keyfile: Path) -> str | None:
    claimed = _keyfile_identity(keyfile)
    return claimed[1] if claimed else None


def _keyfile_identity(keyfile: Path) -> tuple[bytes, str] | None:
    """(signing public key, writer name) of the policy's key file, if it holds a writer."""
    from lifeboat.crypto.writers import raw_public

    try:
        key = load_backup_key(keyfile) if keyfile.is_file() else None
    except (LifeboatError, OSError):
        return None
    if key is None or key.signing is None or key.writer is None:
        return None
    return raw_public(key.signing), key.writer


def local_seal(policy: Settings) -> CacheSeal:
    """How this host tags files it keeps in its state dir (repo/local_cache.py), from the
    backup key file alone: archive_command spools WAL without opening the repository."""
    return keyfile_seal(Path(policy.repository.keyfile))


def keyfile_seal(keyfile: Path) -> CacheSeal:
    """The state dir's cache seal from a backup key file."""
    from lifeboat.repo.keyring import Keyring
    from lifeboat.repo.local_cache import CacheSeal

    return CacheSeal(Keyring.for_backup(load_backup_key(keyfile)).mac)


def open_for_write(policy: Settings) -> Repository:
    """A write-only repository handle: the backup key alone."""
    key = load_backup_key(Path(policy.repository.keyfile))
    return Repository.open(storage_for(policy), backup_key=key, cache_dir=cache_dir(policy))


def resolve_recovery(
    policy: Policy,
    creds: Credentials,
    *,
    purpose: str,
    asset: str | None = None,
    storage: Storage | None = None,
    needs_escrow: bool = False,
) -> RecoveryKey:
    """The recovery key from a file or from M-of-N shares; every use is audited."""
    from lifeboat.crypto.unlock import resolve_for_policy
    from lifeboat.repo import RecordsView
    from lifeboat.repo.recovery_chain import UnlockRecords

    records = UnlockRecords(RecordsView(storage if storage is not None else storage_for(policy)))
    audit = audit_log(policy)
    return resolve_for_policy(
        policy,
        records,
        creds,
        purpose=purpose,
        asset=asset,
        needs_escrow=needs_escrow,
        audit=lambda op, **kw: audit.append(op, **({"asset": asset} | kw)),
    )


def open_for_read(
    policy: ReadSettings,
    creds: Credentials,
    *,
    purpose: str,
    asset: str | None = None,
    needs_escrow: bool = False,
    record: Callable[..., None] | None = None,
) -> Repository:
    """A full repository handle: needs the recovery key (file or shares); ``needs_escrow``
    (key material, as its kind says): the escrow threshold of custodians' shares. The key's
    use is audited now, or handed to ``record`` (a caller that logs it later)."""
    from lifeboat.crypto.unlock import unlock_for_policy
    from lifeboat.repo import RecordsView
    from lifeboat.repo.recovery_chain import UnlockRecords

    storage = storage_for(policy)  # one storage for the key records and the repository
    try:
        if record is None:
            audit = audit_log(policy)

            def record(op: str, **kw: Any) -> None:
                audit.append(op, **({"asset": asset} | kw))

        records = UnlockRecords(RecordsView(storage))
        unlocked = unlock_for_policy(
            policy, records, creds, purpose=purpose, asset=asset, needs_escrow=needs_escrow, audit=record
        )
        backup_key = None
        keyfile = Path(policy.repository.keyfile)
        if keyfile.exists():
            backup_key = load_backup_key(keyfile)
        repo = Repository.open(
            storage, backup_key=backup_key, recovery_key=unlocked.recovery, cache_dir=cache_dir(policy)
        )
        if unlocked.key_material:
            open_key_material(repo, unlocked.key_material, purpose, record, required=needs_escrow)
        return repo
    except BaseException:
        storage.close()
        raise


def open_key_material(
    repo: Repository,
    shares: list[ParsedShare],
    purpose: str,
    record: Callable[..., None],
    *,
    required: bool = True,
) -> None:
    """Lets ``repo`` read key material: the custodians' shares of the escrow key recombined
    (refused, and audited, for too few, or shares of another escrow). Not ``required`` (an
    operation on other assets): a refusal is audited and the operation goes on without it."""
    from lifeboat.repo.escrow import unlock_escrow

    try:
        custodians = unlock_escrow(repo.config, repo.keyring, shares, repo)
    except LifeboatError as exc:
        record(
            "key-access", key="key-material escrow", outcome="refused", reason=exc.message, purpose=purpose
        )
        if required:
            raise
        return
    for name in custodians:
        record("key-access", key="key-material escrow", custodian=name, purpose=purpose)


def keep_rules(policy: Policy) -> Callable[[str], KeepRules]:
    """Per asset: its data class's retention, with the deployment mode's minimum age."""
    from lifeboat.repo import KeepRules

    def rules(asset: str) -> KeepRules:
        if asset not in policy.assets:
            return KeepRules()  # an asset no longer in the policy: keep everything
        r = policy.data_class(asset).retention
        return KeepRules(
            r.last, r.hourly, r.daily, r.weekly, r.monthly, r.yearly, policy.effective_min_days(asset)
        )

    return rules
