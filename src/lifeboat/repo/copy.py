"""Repository replication: copy storage objects verbatim from one repository to another.

Nothing is decrypted: packs, indexes and snapshots are already encrypted and
authenticated, so a copy needs no key and a copy's storage account never sees one. Pack,
index and snapshot names are the SHA-256 of their bytes, which lets the copy refuse a
damaged source object rather than spread it.

Order is what keeps an interrupted copy consistent: the source is listed newest-first
(snapshots, refs, records, indexes, packs), so everything a listed snapshot references was
already written when its pack was listed; objects are then written oldest-first (config,
packs, indexes, refs and records, snapshots last), each group finished before the next
starts. A copy killed at any point holds no snapshot whose data it lacks, and a re-run
copies only the difference (the target is listed; puts are put-if-absent).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

from lifeboat.errors import AlreadyExistsError, ConfigError, IntegrityError, NotFoundError, StorageError
from lifeboat.repo.format import CONFIG_NAME
from lifeboat.repo.immutability import COMMIT_MARGIN, lockable
from lifeboat.repo.locks import RepoLock
from lifeboat.repo.model import SnapshotInfo
from lifeboat.repo.sealed import split_signed
from lifeboat.repo.storage_times import load_storage_times, write_copy_record
from lifeboat.storage.base import Storage, retention_slack

# Written in this order, each phase complete before the next. Locks are per-repository
# state, never copied.
PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("packs", ("data/",)),
    ("indexes", ("index/",)),
    ("refs", ("refs/", "records/", "audit/")),
    ("snapshots", ("snapshots/",)),
)
PHASES_BY_NAME = dict(PHASES)
# named by the SHA-256 of their bytes (docs/design/repository-format.md)
CONTENT_ADDRESSED = ("data/", "index/", "snapshots/")
REGISTRY_RECORDS = "records/registry/"  # repo/trust.py
DEFAULT_WORKERS = 8


@dataclass
class CopyReport:
    """What a repository copy transferred and skipped."""

    source: str
    target: str
    copied: dict[str, int] = field(default_factory=dict)  # objects, per phase
    bytes: int = 0
    already_there: int = 0  # objects the target held before (or gained concurrently)
    config_copied: bool = False
    retention_extended: int = 0  # PutObjectRetention requests on the target

    @property
    def objects(self) -> int:
        """Storage objects copied."""
        return sum(self.copied.values())


@dataclass(frozen=True)
class CopyLag:
    """How far a copy is behind: the primary's snapshots it lacks."""

    missing: list[SnapshotInfo]
    now: datetime

    @property
    def oldest_missing(self) -> SnapshotInfo | None:
        """The oldest primary snapshot the copy lacks, if any."""
        return min(self.missing, key=lambda s: s.time) if self.missing else None

    @property
    def seconds(self) -> float:
        """Time since the oldest snapshot the copy lacks: since then, the primary alone
        holds history. Zero when the copy is up to date."""
        oldest = self.oldest_missing
        return max(0.0, (self.now - oldest.time).total_seconds()) if oldest else 0.0


def _names(storage: Storage, prefixes: Iterable[str]) -> dict[str, int]:
    return {obj.name: obj.size for prefix in prefixes for obj in storage.list(prefix)}


def check_same_repository(source: Storage, target: Storage) -> bool:
    """True when the target already holds this repository's config; False when it holds
    none. A different repository at the target is an error: mixing them corrupts both."""
    want = source.get(CONFIG_NAME)
    try:
        have = target.get(CONFIG_NAME)
    except NotFoundError:
        return False
    if have != want:
        raise ConfigError(
            f"{target.url} holds another repository (its config differs from {source.url})",
            hint="a copy must be empty or a copy of this repository: choose another url",
        )
    return True


def copy_repository(
    source: Storage,
    target: Storage,
    *,
    workers: int = DEFAULT_WORKERS,
    on_object: Callable[[str, int], None] = lambda _name, _size: None,
) -> CopyReport:
    """Copy every object of ``source`` that ``target`` lacks; see the module docstring.

    Holds a shared lock on the source, as a backup does: a prune (exclusive) must not swap
    the indexes between the listing and the copy, or the copy would lack both. And one on
    the target: a prune of the copy would take the packs copied so far, which no index file
    there lists yet, for orphans and delete them."""
    has_config = check_same_repository(source, target)
    with (
        RepoLock(source, exclusive=False, operation=f"copy to {target.url}"),
        RepoLock(target, exclusive=False, operation=f"copy from {source.url}"),
    ):
        return _copy_all(source, target, has_config, workers, on_object)


def _copy_all(
    source: Storage, target: Storage, has_config: bool, workers: int, on_object: Callable[[str, int], None]
) -> CopyReport:
    report = CopyReport(source.url, target.url)
    # newest-first listing: a snapshot listed here has its packs in the later listings
    listed: dict[str, dict[str, int]] = {}
    written: dict[str, float] = {}  # snapshot name -> the source's write time
    for phase, prefixes in reversed(PHASES):
        if phase == "snapshots":
            stats = [obj for prefix in prefixes for obj in source.list(prefix)]
            written = {obj.name: obj.mtime for obj in stats}
            listed[phase] = {obj.name: obj.size for obj in stats}
        else:
            listed[phase] = _names(source, prefixes)
    lock = threading.Lock()
    early: set[str] = set()
    if not has_config:
        # the writer registry before the config, as `init` writes them: a config naming a
        # root key always has its registry, so readers of a half-copy never see neither
        early = {n for n in listed["refs"] if n.startswith(REGISTRY_RECORDS)}
        report.copied["refs"] = 0
        for name in sorted(early):
            _copy_one(source, target, name, report=report, lock=lock, on_object=on_object, phase="refs")
        # first: a target without config is not a repository yet, so nothing reads a half-copy
        _copy_one(source, target, CONFIG_NAME, report=report, lock=threading.Lock(), on_object=on_object)
        report.config_copied = True
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="copy") as pool:
        copier = _Copier(source, target, report, lock, on_object, pool)
        for phase, prefixes in PHASES:
            present = {n: size for n, size in _names(target, prefixes).items() if n not in early}
            todo = sorted(n for n in listed[phase] if n not in present and n not in early)
            if phase == "snapshots" and todo:
                report.retention_extended = follow_retention(target, pool)
                record_source_times(source, target, {n: written[n] for n in todo})
            report.copied.setdefault(phase, 0)
            report.already_there += len(listed[phase]) - len(todo) - len(early & listed[phase].keys())
            gone: list[str] = []
            copier.copy(phase, todo, gone)
            if phase == "indexes" and gone:
                _catch_up_with_consolidation(copier, gone)
    return report


@dataclass(frozen=True)
class _Copier:
    """Copies objects from the source to the target on the pool's threads."""

    source: Storage
    target: Storage
    report: CopyReport
    lock: threading.Lock
    on_object: Callable[[str, int], None]
    pool: ThreadPoolExecutor

    def copy(self, phase: str, names: list[str], gone: list[str]) -> None:
        """Each of ``names`` (counted under ``phase``); those the source no longer holds go
        into ``gone``. Waits for all of them and raises the first failure."""
        copy = partial(
            _copy_one,
            self.source,
            self.target,
            report=self.report,
            lock=self.lock,
            on_object=self.on_object,
            phase=phase,
            gone=gone,
        )
        list(self.pool.map(copy, names))


def _catch_up_with_consolidation(copier: _Copier, gone: list[str]) -> None:
    """Index files that vanished while they were copied were merged into one written since
    (a backup consolidates the index under a shared lock, as this copy holds): without it,
    the copy would lack both. Listed again, index files before packs, so every pack a file
    lists is copied before the file (a prune, which could remove one, waits for our lock);
    repeated while files still vanish."""
    for _ in range(5):
        if not gone:
            return
        gone.clear()
        indexes = _names(copier.source, ("index/",))
        packs = _names(copier.source, ("data/",))
        for phase, names in (("packs", packs), ("indexes", indexes)):
            present = _names(copier.target, PHASES_BY_NAME[phase])
            copier.copy(phase, sorted(n for n in names if n not in present), gone)
    if gone:
        raise StorageError(
            f"index files kept vanishing from {copier.source.url} while they were copied ({gone[0]}, ...)",
            hint="run the copy again",
        )


def _copy_one(
    source: Storage,
    target: Storage,
    name: str,
    *,
    report: CopyReport,
    lock: threading.Lock,
    on_object: Callable[[str, int], None],
    phase: str | None = None,
    gone: list[str] | None = None,
) -> None:
    try:
        data = source.get(name)
    except NotFoundError:  # removed by prune since the listing (nothing left needs it), or
        if gone is not None:  # an index file merged into a new one (_catch_up_with_consolidation)
            with lock:
                gone.append(name)
        return
    if name.startswith(CONTENT_ADDRESSED) and not _matches_name(name, data):
        raise IntegrityError(
            f"{name} in {source.url} does not match its name (damaged); nothing damaged was copied",
            hint="run 'lifeboat check' on the primary repository",
        )
    try:
        target.put(name, data, sha256=_pack_sha256(name))
    except AlreadyExistsError:
        with lock:
            report.already_there += 1
        return
    with lock:
        if phase is not None:
            report.copied[phase] += 1
        report.bytes += len(data)
    on_object(name, len(data))


def record_source_times(source: Storage, target: Storage, written: dict[str, float]) -> None:
    """Before snapshot headers reach the copy (which dates them anew), a copy record of
    their write times in the source (repo/storage_times.py): the copy judges them by those,
    and keeps the source's own record for snapshots the source itself got by a copy."""
    times = load_storage_times(source)
    record: dict[str, float | None] = {}
    for name, mtime in written.items():
        snapshot_id = name.rsplit("/", 1)[-1]
        when = times.of(snapshot_id, mtime)
        record[snapshot_id] = None if when is None else when.timestamp()
    write_copy_record(target, record)


def follow_retention(target: Storage, pool: ThreadPoolExecutor) -> int:
    """On a copy under Object Lock: before snapshots arrive, lock every pack and index file
    at least as long as a snapshot copied now (as backups do on the primary,
    repo/immutability.py). A copy reads no trees (it has no key), so it cannot tell which
    packs the new snapshots reuse: it extends them all, plus slack, so that happens about
    once per slack period (a quarter of lock_days, at most a week); an object locked long
    enough costs a HEAD, or nothing when this process wrote it."""
    storage = lockable(target)
    if storage is None:
        return 0
    assert storage.lock_days is not None
    needed = (datetime.now(UTC) + timedelta(days=storage.lock_days) + COMMIT_MARGIN).timestamp()
    until = needed + retention_slack(storage.lock_days).total_seconds()
    before = storage.retention_requests

    def settle(name: str) -> None:
        try:
            current = storage.retention(name)
        except NotFoundError:
            return
        if current is None or current < needed:
            storage.extend_retention(name, until)

    list(pool.map(settle, sorted(_names(target, ("data/", "index/")))))
    return storage.retention_requests - before


def snapshot_names(storage: Storage) -> set[str]:
    """The snapshot object names stored in ``storage``."""
    return {obj.name.rsplit("/", 1)[-1] for obj in storage.list("snapshots/")}


def copy_lag(primary: list[SnapshotInfo], target: Storage, now: datetime) -> CopyLag:
    """The primary's snapshots (read with any key) that ``target`` lacks."""
    have = snapshot_names(target)
    return CopyLag([s for s in primary if s.id not in have], now)


def _pack_sha256(name: str) -> str | None:
    """The SHA-256 of a pack's bytes, which its name is (``_matches_name`` checked it)."""
    return name.rsplit("/", 1)[-1] if name.startswith("data/") else None


def _matches_name(name: str, data: bytes) -> bool:
    """A content-addressed object matches its name; a snapshot header may carry its writer's
    signature trailer after the named bytes (repo/snapshots.py), and so may an index file."""
    object_id = name.rsplit("/", 1)[-1]
    if name.startswith(("snapshots/", "index/")):
        return split_signed(object_id, data) is not None
    return hashlib.sha256(data).hexdigest() == object_id
