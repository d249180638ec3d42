"""Index consolidation after a backup: many small index files merged into few.

Every backup writes its own index files (one per 16 packs, at least two per snapshot), so
hourly backups leave thousands of them and every later backup, check and restore lists and
loads them all. Past a threshold of small ones, a backup that has committed merges them
into files of up to INDEX_FILE_BLOBS blobs and deletes those it supersedes (docs/design/repository-format.md,
"Index consolidation").

Crash safety: the consolidated index is written (put-if-absent, named by its content's
hash) before any file it supersedes is deleted, and a file is deleted only by a process
that has just written a superset of it, so a kill at any point leaves every index entry
listed somewhere (duplicates are harmless). It runs under the backup's shared lock: prune,
the only deleter of packs, holds the exclusive one, so every pack a merged file lists
still exists. Concurrent backups may write or merge index files meanwhile; readers that
find a listed index file gone list again (index.load_index).

Under Object Lock an index file is merged only once its retention has passed (it could not
be deleted otherwise, and merging it would only add a file).

Index files are sealed and signed (repo/sealed.py), so a consolidation merges only what this
handle opens and may use, and signs the merged file with its own key: on a backup host the
writer's (it merges its own files: another writer's are sealed to it), on the recovery side
the key it holds (a writer key file when given, otherwise the root key, which every reader
accepts for an index). Merged sealed files are never byte-identical, so a merge always
writes a new name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lifeboat.errors import LifeboatError, LockedError, NotFoundError
from lifeboat.repo.format import index_name
from lifeboat.repo.immutability import RetentionCache, lockable
from lifeboat.repo.index import INDEX_FILE_BLOBS, PackEntry, read_index_file, write_index
from lifeboat.storage.base import Storage, VersionedStorage, list_names

if TYPE_CHECKING:
    from lifeboat.repo.handle import RepoHandle

# More index files than this and a backup consolidates them; LIFEBOAT_INDEX_FILES_MAX
# overrides it (0 turns consolidation off).
INDEX_FILES_MAX = 32
ENV_INDEX_FILES_MAX = "LIFEBOAT_INDEX_FILES_MAX"
# An index file listing this many blobs is full: it is left as it is, so each consolidation
# rewrites only what is small, not the whole history again. Half the most a file lists
# (a file is cut before the pack that would take it past that, so it may end short of it).
FULL_INDEX_BLOBS = INDEX_FILE_BLOBS // 2


@dataclass
class ConsolidateReport:
    """What one consolidation merged, wrote and left under retention."""

    merged: list[str] = field(default_factory=list)  # index files superseded and deleted
    written: list[str] = field(default_factory=list)  # the consolidated index files
    kept_locked: list[str] = field(default_factory=list)  # under retention: left as they are


def index_files_max() -> int:
    """How many index files a backup leaves before merging them (LIFEBOAT_INDEX_FILES_MAX)."""
    raw = os.environ.get(ENV_INDEX_FILES_MAX, "")
    try:
        return max(0, int(raw)) if raw.strip() else INDEX_FILES_MAX
    except ValueError:
        return INDEX_FILES_MAX


def retained_until(storage: Storage, name: str) -> float | None:
    """When the object's retention ends (epoch seconds), or None when it has none."""
    if isinstance(storage, VersionedStorage):
        return storage.retention(name) if storage.lock_days else None
    if getattr(storage, "lock_days", None):
        return storage.stat(name).locked_until
    return None


def deletable_now(storage: Storage, name: str, now: float | None = None) -> bool:
    """True when no retention keeps ``name`` from being deleted (it may be gone already)."""
    try:
        until = retained_until(storage, name)
    except NotFoundError:
        return True
    return until is None or until <= (now if now is not None else time.time())


def free_of_retention(repo: RepoHandle, names: Iterable[str]) -> dict[str, bool]:
    """``deletable_now`` for each name, asking the storage only about names whose retention
    is not already known to last past now (the local retention cache: retention only grows,
    so a known retain-until in the future is a sure "no", and costs no HEAD)."""
    now = time.time()
    cache = RetentionCache(repo)
    answers = {n: False for n in names if cache.known.get(n, 0.0) > now}
    todo = [n for n in names if n not in answers]

    def ask(name: str) -> tuple[str, float | None]:
        try:
            return name, retained_until(repo.storage, name)
        except NotFoundError:
            return name, None

    if todo and lockable(repo.storage) is None and not getattr(repo.storage, "lock_days", None):
        answers.update(dict.fromkeys(todo, True))  # no retention anywhere: nothing to ask
        return answers
    with ThreadPoolExecutor(max_workers=repo.workers) as pool:
        for name, until in pool.map(ask, todo):
            answers[name] = until is None or until <= now
            if until is not None:
                cache.known[name] = max(until, cache.known.get(name, 0.0))
    cache.save()
    return answers


def read_index_files(
    repo: RepoHandle, names: Iterable[str], workers: int = 8
) -> tuple[dict[str, list[PackEntry]], list[str]]:
    """The pack entries of each index file this handle may use (through the local cache),
    and the names that are gone, damaged, refused or sealed by another writer (never merged,
    never deleted here: a writer consolidates only its own index files)."""
    cache, codec, trust = repo.index_cache, repo.metadata, repo.trust()

    def load(name: str) -> tuple[str, list[PackEntry] | None]:
        return name, read_index_file(repo.storage, codec, cache, trust, name).packs

    loaded: dict[str, list[PackEntry]] = {}
    missing: list[str] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for name, packs in pool.map(load, list(names)):
            if packs is None:
                missing.append(name)
            else:
                loaded[name] = packs
    return loaded, missing


def merge_entries(files: Iterable[list[PackEntry]]) -> list[PackEntry]:
    """One entry per pack, every distinct blob entry listed for it once, in a stable order
    (so the same inputs always give the same bytes, hence the same name). Entries that
    disagree about a blob are all kept: one may come from a misdirecting index file, and
    only reading the pack tells which (readers fall back, repack asks the pack's trailer)."""
    # Entries were checked as they were read (str id and type, int offset, length and raw
    # length), so the lists sort as their values do and equal ones lie side by side: no
    # key tuple per blob (a million-blob prune held ~100 MB of them). The blob lists are
    # the ones read, not copies: nothing changes an entry once read.
    packs: dict[str, list[list[Any]]] = {}
    for entries in files:
        for pack in entries:
            packs.setdefault(pack["id"], []).extend(pack["blobs"])
    merged: list[PackEntry] = []
    for pack_id, blobs in sorted(packs.items()):
        blobs.sort()
        merged.append(
            {"id": pack_id, "blobs": [b for i, b in enumerate(blobs) if not i or b != blobs[i - 1]]}
        )
    return merged


def blob_count(entries: list[PackEntry]) -> int:
    """The number of blobs the index entries list."""
    return sum(len(p["blobs"]) for p in entries)


def small_index_files(blobs: Mapping[str, int], names: Iterable[str]) -> list[str]:
    """The names not known (``blobs``: index file name -> blobs listed) to list
    FULL_INDEX_BLOBS blobs or more: only these are read and merged, so a long history of
    full files costs nothing here."""
    return [n for n in names if blobs.get(n, 0) < FULL_INDEX_BLOBS]


def consolidate_indexes(
    repo: RepoHandle, *, limit: int | None = None, blobs: Mapping[str, int] | None = None
) -> ConsolidateReport | None:
    """Merge the small index files when there are more than ``limit`` of them. Call with a
    repository lock held (a backup's shared lock). None when under the limit. ``blobs``:
    what the caller knows of index files' sizes (by default the loaded index's)."""
    limit = index_files_max() if limit is None else limit
    known = repo.index().file_blobs if blobs is None else blobs
    names = small_index_files(known, list_names(repo.storage, "index/"))
    if limit <= 0 or len(names) <= limit:
        return None
    loaded, _ = read_index_files(repo, names, workers=repo.workers)
    small = sorted(n for n, entries in loaded.items() if blob_count(entries) < FULL_INDEX_BLOBS)
    report = ConsolidateReport()
    free = free_of_retention(repo, small)
    candidates = [n for n in small if free[n]]
    report.kept_locked = [n for n in small if not free[n]]
    if len(candidates) < 2:
        return report
    merged = merge_entries(loaded[n] for n in candidates)
    # put-if-absent: the same bytes (a name is their hash) may be there from a run killed
    # before its deletes
    written = write_index(repo.storage, merged, repo.metadata, repo.index_cache)
    report.written = [index_name(i) for i in written]
    for name in candidates:
        if name in report.written:
            continue  # the same bytes were already there: they are the consolidated index
        try:
            repo.storage.delete(name)
            report.merged.append(name)
        except LockedError:
            report.kept_locked.append(name)
    return report


def consolidate_quietly(repo: RepoHandle, blobs: Mapping[str, int]) -> ConsolidateReport | None:
    """After a committed backup: an optimisation that must never fail the backup."""
    try:
        return consolidate_indexes(repo, blobs=blobs)
    except (LifeboatError, OSError):
        return None
