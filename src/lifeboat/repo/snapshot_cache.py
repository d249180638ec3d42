"""A local cache of snapshot headers: listing a long history reads one file, not thousands.

Hourly backups for a year are 8,760 snapshot headers; every backup (to find its parent),
`snapshots`, `check` and restore read them all. Headers are immutable and named by the
SHA-256 of their bytes, so what was once read and verified (hash, MAC, fields) never goes
stale: the cache keeps each verified header's fields by id, with the size and time the
listing gave for it, in one file under the repository's cache directory (and a small one of
the headers added since, ``SealedRecords``). The storage listing stays the truth: a forgotten
snapshot's cached fields are never returned (and are dropped when the file is next written
whole), and `snapshots` reads and verifies again a header listed with another size or time
(replaced or damaged in place on a local repository). On a local repository, the choice of
a snapshot to restore lists the headers the cache holds by name alone and reads the chosen
one (repo/snapshots.py ``listed_headers``). `check` reads every header from
the storage all the same and takes from the cache only those whose bytes are the ones
verified (each entry keeps a BLAKE3 of the whole object, signature trailer included: the
name covers only the part before it). Like the index cache (repo/index.py), it is private
to this host and only an optimisation: unreadable, it is ignored and rebuilt.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from lifeboat.errors import ConfigError
from lifeboat.private import private_dir, write_private
from lifeboat.repo.local_cache import CacheSeal
from lifeboat.repo.model import SnapshotStats

CACHE_NAME = "snapshots.json"
# id -> a header a key opened: [size, mtime, verified, signature check, sealed, asset, kind,
# time, host, labels, stats (STATS_FIELDS), tree, key_id, parent, tree_format]; one sealed by
# another writer: [size, mtime, verified, unopened, claimed asset]. ``verified``: per side
# ("writer", "recovery"), the BLAKE3 of the bytes it verified. Lists, not objects: 10,000
# headers parse in half the time. The layout is in the file's tag (HEADERS_LAYOUT): a cache
# of an earlier one fails it and is rebuilt, never read by position as this one.
OPENED_FIELDS = 15
UNOPENED_FIELDS = 5
HEADERS_LAYOUT = 2  # in the tag (SealedRecords.label): a file of another layout fails it
STATS_FIELDS = tuple(f.name for f in fields(SnapshotStats))
# id -> [size, mtime, time, asset, signature check, sealed]: all that choosing a snapshot
# needs (the writer verdict is judged afresh from the cached check; a writer key chooses
# only among the sealed headers it signed itself), a quarter of the size
SUMMARY_NAME = "snapshots-summary.json"
SUMMARY_FIELDS = 6  # rows of an older layout (fewer fields) are read again
# Below this many entries a cache file is rewritten whole: the split only pays in a long
# history (a year of hourly backups: 6.9 MB of headers, ~60 ms to write again).
SPLIT_FROM = 512


class SealedRecords:
    """A sealed cache file of records by id (each one immutable once written: a verified
    header, a summary row), kept as a base and a small file of recent records beside it
    (``NAME-recent.json``). Saving after a backup adds one header to 10,000: only the recent
    file is written, until it holds an eighth as many records as the base (or the base holds
    that many that are no longer asked for), then the base is rewritten whole and the
    recent file emptied; a save that changes nothing writes nothing. Either file fails its
    seal on its own and is then ignored (each name, and the layout of its records, is in
    its tag, so one cannot stand for the other, nor a file of another layout be read as
    this one's); a recent file left from an earlier base only adds records that were
    verified once, which the listing still checks against what it lists."""

    def __init__(
        self, path: Path | None, seal: CacheSeal, split_from: int | None = None, layout: int | None = None
    ) -> None:
        self.path = path
        self.recent_path = path.with_name(f"{path.stem}-recent{path.suffix}") if path is not None else None
        self.seal = seal
        self.split_from = SPLIT_FROM if split_from is None else split_from
        self.layout = layout
        self._base: dict[str, Any] | None = None  # as last loaded or written by this handle
        self._recent: dict[str, Any] = {}  # the recent file, as last loaded or written

    def label(self, path: Path) -> str:
        """What the tag of ``path`` covers besides its data: its name and the layout."""
        return tag_label(path.name, self.layout)

    def load(self) -> dict[str, Any]:
        """Every record, the recent ones over the base's ({} when there is no usable file)."""
        base = self._read(self.path)
        self._base = base
        self._recent = self._read(self.recent_path) if base else {}
        return {**base, **self._recent}  # a copy: the caller adds to it, the base stays as loaded

    def has_base(self) -> bool:
        """Whether the base file is there and its seal holds (its JSON is not parsed)."""
        if self.path is None:
            return False
        try:
            return self.seal.open(self.label(self.path), self.path.read_bytes()) is not None
        except OSError:
            return False

    def save(self, records: dict[str, Any]) -> list[str] | None:
        """Replace the records: the ids the recent file holds that it did not before
        (nothing is written when there are none), or None when the base was rewritten
        (records not loaded by this handle are always written whole)."""
        base = self._base
        if base is not None and len(base) >= self.split_from:
            recent = {k: v for k, v in records.items() if not _same(base.get(k), v)}
            dropped = len(base.keys() - records.keys())
            if len(recent) + dropped <= len(base) // 8:
                added = [k for k, v in recent.items() if not _same(self._recent.get(k), v)]
                if (added or recent.keys() != self._recent.keys()) and self._write(self.recent_path, recent):
                    self._recent = recent
                return added
        if self._write(self.path, records):
            self._base = records
            self._recent = {} if self._write(self.recent_path, {}) else self._recent
        return None

    def add(self, records: dict[str, Any]) -> None:
        """Add records to the recent file, without reading the base (a later ``save``
        folds them in)."""
        if records:
            self._write(self.recent_path, {**self._read(self.recent_path), **records})

    def _read(self, path: Path | None) -> dict[str, Any]:
        if path is None:
            return {}
        try:
            data = self.seal.open(self.label(path), path.read_bytes())
            loaded = orjson.loads(data) if data is not None else None
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def _write(self, path: Path | None, records: dict[str, Any]) -> bool:
        """Whether ``records`` were written (a failure only costs reading headers again)."""
        if path is None:
            return False
        try:
            private_dir(path.parent)
            write_private(path, self.seal.seal(self.label(path), orjson.dumps(records)))
        except (OSError, ConfigError):  # a read-only state dir: private_dir says ConfigError
            return False  # the storage is the truth; without the cache, headers are read again
        return True


def tag_label(name: str, layout: int | None) -> str:
    """What a cache file's tag covers besides its data: its name, and its records' layout."""
    return name if layout is None else f"{name}#layout={layout}"


def _same(cached: object, record: object) -> bool:
    """Whether a record is the one the base holds (the very object when it came from the
    base, and then not compared field by field)."""
    return cached is record or (cached is not None and cached == record)


class SnapshotCache:
    """Verified snapshot headers kept locally, and a summary to choose a snapshot from."""

    def __init__(self, directory: Path | None, seal: CacheSeal, split_from: int | None = None) -> None:
        self.headers = SealedRecords(
            directory / CACHE_NAME if directory is not None else None, seal, split_from, HEADERS_LAYOUT
        )
        self.summary = SealedRecords(
            directory / SUMMARY_NAME if directory is not None else None, seal, split_from
        )

    def load(self) -> dict[str, list[Any]]:
        """The cached headers by snapshot id ({} when there is no usable cache)."""
        data = self.headers.load()
        shaped = (OPENED_FIELDS, UNOPENED_FIELDS)
        return {k: v for k, v in data.items() if isinstance(v, list) and len(v) in shaped}

    def save(self, payloads: dict[str, list[Any]]) -> None:
        """The headers, and their summary (only the rows of the headers that went to the
        recent file, when only they did and there is a summary)."""
        recent = self.headers.save(payloads)
        if recent is not None and self.summary.has_base():
            self.summary.add(_summary_of({k: payloads[k] for k in recent}))
        else:
            self.summary.save(_summary_of(payloads))

    def has_summary(self) -> bool:
        """Whether a summary was saved whose tag holds (one this user may not read is none:
        `wal push` runs as PostgreSQL's OS user beside a root-owned cache). Asked on every
        listing, so its tag is checked but its JSON not parsed (10,000 snapshots: ~15 ms)."""
        return self.summary.has_base()

    def load_summary(self) -> dict[str, list[Any]]:
        """The saved summary ({} when there is none or it is unreadable)."""
        data = self.summary.load()
        return {k: v for k, v in data.items() if isinstance(v, list) and len(v) == SUMMARY_FIELDS}

    def save_summary(self, summary: dict[str, list[Any]]) -> None:
        """Replace the summary (a failure only costs reading the headers again)."""
        self.summary.save(summary)


def _summary_of(entries: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {snapshot_id: summary_row(e) for snapshot_id, e in entries.items()}


def summary_row(entry: list[Any]) -> list[Any]:
    """A cached header's summary row: [size, mtime, time, asset, check, sealed] (another
    writer's sealed header: no time or asset to choose by)."""
    if len(entry) == UNOPENED_FIELDS:
        return [entry[0], entry[1], None, None, entry[3], True]
    return [entry[0], entry[1], entry[7], entry[5], entry[3], entry[4] is True]
