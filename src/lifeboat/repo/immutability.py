"""Retention that follows the data, and tampering on versioned stores.

A snapshot reuses packs written long before it, so the Object Lock a pack got when it was
written ends too early for later snapshots. Before a snapshot commits, every pack and index
file it references is brought up to at least the snapshot's own retain-until; an object
below that is extended to retain-until + slack, so one PutObjectRetention covers the next
slack's worth of snapshots (docs/design/repository-format.md, "Retention"). COMPLIANCE
retention only grows: nothing here, in forget or in prune ever lowers it.

What each object's retention is known to be is cached under the repository's cache
directory (retention only grows, so a cached value is never too high); objects the cache
does not know cost one HEAD each, once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from lifeboat.errors import ConfigError, NotFoundError
from lifeboat.private import write_private
from lifeboat.repo.format import pack_name, snapshot_name
from lifeboat.repo.model import Problem
from lifeboat.storage.base import Storage, VersionedStorage, retention_slack

if TYPE_CHECKING:
    from lifeboat.repo.handle import RepoHandle
    from lifeboat.repo.index import Index
    from lifeboat.repo.model import References

# a snapshot is written a moment after its retention is settled
COMMIT_MARGIN = timedelta(minutes=10)


def retention_cache_name(url: str, endpoint: str | None = None) -> str:
    """The retention cache's file name for the store at ``url`` (on ``endpoint``)."""
    where = f"{url}\n{endpoint or ''}".encode()
    return f"retention-{hashlib.sha256(where).hexdigest()[:16]}.json"


def lockable(storage: Storage) -> VersionedStorage | None:
    """The storage when it keeps versions under Object Lock, else None."""
    if isinstance(storage, VersionedStorage) and storage.lock_days:
        return storage
    return None


def objects_of(
    index: Index, blob_ids: Iterable[str], extra: Iterable[str] = (), pack_ids: Iterable[str] = ()
) -> set[str]:
    """The pack and index files that hold ``blob_ids`` (per ``index``) or are the packs
    ``pack_ids``, plus ``extra``."""
    packs = {loc.pack for b in blob_ids for loc in index.locations(b)}
    packs.update(pack_ids)
    names = {pack_name(p) for p in packs}
    names.update(name for name, listed in index.files.items() if packs.intersection(listed))
    names.update(extra)
    return names


class RetentionCache:
    """name -> retain-until (epoch seconds) known for this repository where it is stored.
    The repository's other caches hold what its id names alike everywhere; a retain-until
    date is the store's own: a copy has the same id and keys, and its own lock_days (a
    primary's dates taken for a copy's, after a failover to it, would skip its extensions)."""

    def __init__(self, repo: RepoHandle) -> None:
        # s3://bucket/prefix names no endpoint: a copy of the same name on another provider
        self.name = retention_cache_name(repo.storage.url, getattr(repo.storage, "endpoint_url", None))
        self.path = repo.cache_dir / self.name if repo.cache_dir is not None else None
        self.seal = repo.cache_seal  # dates edited in the state dir would skip extensions
        self.known: dict[str, float] = {}
        if self.path is not None:
            try:
                raw = self.seal.open(self.name, self.path.read_bytes())
                loaded = json.loads(raw) if raw is not None else {}
                self.known = {str(k): float(v) for k, v in loaded.items()}
            except (OSError, ValueError, AttributeError):
                self.known = {}

    def save(self) -> None:
        """Writes the known retain-until dates to the local cache."""
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = json.dumps(self.known, separators=(",", ":")).encode()
            write_private(self.path, self.seal.seal(self.name, data))
        except (OSError, ConfigError):
            pass  # an optimisation: without it, known objects cost a HEAD again


def ensure_retention(repo: RepoHandle, names: Iterable[str], now: datetime | None = None) -> int:
    """Lock every object in ``names`` until at least what a snapshot committed now needs.
    Returns how many PutObjectRetention requests it made."""
    storage = lockable(repo.storage)
    if storage is None:
        return 0
    assert storage.lock_days is not None
    start = now or datetime.now(UTC)
    needed = (start + timedelta(days=storage.lock_days) + COMMIT_MARGIN).timestamp()
    target = needed + retention_slack(storage.lock_days).total_seconds()
    cache = RetentionCache(repo)
    todo = sorted(n for n in set(names) if cache.known.get(n, 0.0) < needed)
    before = storage.retention_requests

    def settle(name: str) -> tuple[str, float | None]:
        try:
            current = storage.retention(name)
        except NotFoundError:
            return name, None  # removed by a prune since the index was read: not ours to lock
        if current is not None and current >= needed:
            return name, current
        storage.extend_retention(name, target)
        return name, target

    with ThreadPoolExecutor(max_workers=repo.workers) as pool:
        for name, until in pool.map(settle, todo):
            if until is not None:
                cache.known[name] = until
    cache.save()
    return storage.retention_requests - before


def tampering_problems(repo: RepoHandle) -> list[Problem]:
    """Names with versions or delete markers after their first version (S3)."""
    storage = repo.storage
    if not isinstance(storage, VersionedStorage):
        return []
    return [Problem("tampered", t.name, t.describe()) for t in storage.tampering("")]


def retention_problems(repo: RepoHandle, refs: References, index: Index) -> list[Problem]:
    """Every referenced pack and index file whose retention ends before that of a snapshot
    that needs it."""
    storage = lockable(repo.storage)
    if storage is None:
        return []
    snap_until: dict[str, float] = {}
    for snap in refs.snapshots:
        try:
            until = storage.retention(snapshot_name(snap.id), fresh=True)
        except NotFoundError:
            continue
        if until is not None:
            snap_until[snap.short_id] = until
    need: dict[str, tuple[float, str]] = {}  # object -> (latest retain-until needed, by whom)

    def require(name: str, until: float, short_id: str) -> None:
        if until > need.get(name, (0.0, ""))[0]:
            need[name] = (until, short_id)

    for blob_id, users in refs.users.items():
        for loc in index.locations(blob_id):  # none: reported as missing-chunk
            for short_id, _ in users:
                if short_id in snap_until:
                    require(pack_name(loc.pack), snap_until[short_id], short_id)
    for name, listed in index.files.items():
        for pack_id in listed:
            if pack_name(pack_id) in need:
                require(name, *need[pack_name(pack_id)])

    def compare(name: str) -> Problem | None:
        until, short_id = need[name]
        try:
            have = storage.retention(name, fresh=True)
        except NotFoundError:
            return None  # reported as missing
        if have is not None and have >= until:
            return None
        ends = "never locked" if have is None else f"locked until {_iso(have)}"
        return Problem(
            "retention-short",
            name,
            f"{name} is {ends}, but snapshot {short_id} is retained until {_iso(until)}",
            [short_id],
        )

    with ThreadPoolExecutor(max_workers=repo.workers) as pool:
        return [p for p in pool.map(compare, sorted(need)) if p is not None]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def endpoint_failures(storage: Storage) -> list[str]:
    """What a versioned endpoint fails to enforce; nothing when trusted or not versioned."""
    if not isinstance(storage, VersionedStorage) or storage.trust_endpoint:
        return []
    return storage.probe()


def refuse_lying_endpoint(storage: Storage) -> None:
    """``init``: a repository on an endpoint that does not enforce put-if-absent or Object
    Lock is not the immutable repository it claims to be."""
    failures = endpoint_failures(storage)
    if failures:
        raise ConfigError(
            f"the S3 endpoint of {storage.url} does not enforce what lifeboat relies on: "
            + "; ".join(failures),
            hint="use an endpoint that enforces conditional writes and Object Lock "
            "(docs/operations/s3-compatibility.md), or set [repository] trust_endpoint = true "
            "to accept it unsafely",
        )


def endpoint_problems(repo: RepoHandle) -> list[Problem]:
    """What the storage endpoint does not enforce of the retention it promises."""
    return [Problem("untrusted-endpoint", repo.storage.url, f) for f in endpoint_failures(repo.storage)]
