"""The backup host's local memory of its last snapshot per asset.

Maps an asset-chosen identity (path|size|mtime|inode, key|version|etag, ...) to the entry
that content produced, so unchanged files and objects are not read again. It lives on the
backup host (which sees the plaintext anyway), never in the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import zstandard

from lifeboat.private import private_dir, write_private
from lifeboat.repo.model import Entry


class ParentCache:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            raw = zstandard.ZstdDecompressor().decompress(path.read_bytes())
            data = orjson.loads(raw)
        except (OSError, ValueError, zstandard.ZstdError):
            return
        if isinstance(data, dict):
            self.entries = data

    def lookup(self, identity: str) -> Entry | None:
        data = self.entries.get(identity)
        if data is None:
            return None
        try:
            return Entry.from_json(data)
        except TypeError:
            return None

    def save(self, entries: dict[str, dict[str, Any]]) -> None:
        if self.path is None:
            return
        try:
            private_dir(self.path.parent)
            write_private(self.path, zstandard.ZstdCompressor(level=1).compress(orjson.dumps(entries)))
        except OSError:
            pass  # losing the cache only costs a full read next time
