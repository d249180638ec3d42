"""A local cache of snapshot headers: listing a long history reads one file, not thousands.

Hourly backups for a year are 8,760 snapshot headers; every backup (to find its parent),
`snapshots`, `check` and restore read them all. Headers are immutable and named by the
SHA-256 of their bytes, so what was once read and verified (hash, MAC, fields) never goes
stale: the cache keeps each verified header's fields by id, with the size and time the
listing gave for it, in one file under the repository's cache directory. The storage listing
stays the truth: a forgotten snapshot's cached fields are never returned (and are dropped at
the next save), and a header listed with another size or time (replaced or damaged in
place on a local repository) is read and verified again. `check` reads every header from
the storage all the same and takes from the cache only those whose bytes are the ones
verified (each entry keeps a BLAKE3 of the whole object, signature trailer included: the
name covers only the part before it). Like the index cache (repo/index.py), it is private
to this host and only an optimisation: unreadable, it is ignored and rebuilt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from lifeboat.errors import ConfigError
from lifeboat.private import private_dir, write_private
from lifeboat.repo.local_cache import CacheSeal

CACHE_NAME = "snapshots.json"
# id -> [size, mtime, time, asset, signature check, sealed]: all that choosing a snapshot
# needs (the writer verdict is judged afresh from the cached check; a writer key chooses
# only among the sealed headers it signed itself), a quarter of the size
SUMMARY_NAME = "snapshots-summary.json"
SUMMARY_FIELDS = 6  # rows of an older layout (fewer fields) are read again


class SnapshotCache:
    """Verified snapshot headers kept locally, and a summary to choose a snapshot from."""

    def __init__(self, directory: Path | None, seal: CacheSeal) -> None:
        self.path = directory / CACHE_NAME if directory is not None else None
        self.summary_path = directory / SUMMARY_NAME if directory is not None else None
        self.seal = seal

    def _read(self, path: Path) -> object:
        try:
            data = self.seal.open(path.name, path.read_bytes())
            return orjson.loads(data) if data is not None else None
        except (OSError, ValueError):
            return None

    def load(self) -> dict[str, dict[str, Any]]:
        """The cached headers by object name ({} when there is no usable cache)."""
        data = self._read(self.path) if self.path is not None else None
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, dict)}

    def save(self, payloads: dict[str, dict[str, Any]]) -> None:
        """The headers, and their summary."""
        summary = {}
        for snapshot_id, entry in payloads.items():
            if "unopened" in entry:  # sealed by another writer: listed, never chosen
                summary[snapshot_id] = [*entry["stat"], None, None, entry["unopened"], True]
                continue
            try:
                summary[snapshot_id] = [
                    *entry["stat"],
                    entry["header"]["time"],
                    entry["header"]["asset"],
                    entry["signature"],
                    entry.get("sealed") is True,
                ]
            except (KeyError, TypeError):
                continue
        self._write(self.path, orjson.dumps(payloads))
        self.save_summary(summary)

    def has_summary(self) -> bool:
        """Whether a summary was saved whose tag holds (one this user may not read is none:
        `wal push` runs as PostgreSQL's OS user beside a root-owned cache). Asked on every
        listing, so its tag is checked but its JSON not parsed (10,000 snapshots: ~15 ms)."""
        if self.summary_path is None:
            return False
        try:
            return self.seal.open(self.summary_path.name, self.summary_path.read_bytes()) is not None
        except OSError:
            return False

    def load_summary(self) -> dict[str, list[Any]]:
        """The saved summary ({} when there is none or it is unreadable)."""
        data = self._read(self.summary_path) if self.summary_path is not None else None
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, list) and len(v) == SUMMARY_FIELDS}

    def save_summary(self, summary: dict[str, list[Any]]) -> None:
        """Replace the summary (a failure only costs reading the headers again)."""
        self._write(self.summary_path, orjson.dumps(summary))

    def _write(self, path: Path | None, data: bytes) -> None:
        if path is None:
            return
        try:
            private_dir(path.parent)
            write_private(path, self.seal.seal(path.name, data))
        except (OSError, ConfigError):  # a read-only state dir: private_dir says ConfigError
            pass  # the storage is the truth; without the cache, headers are read again
