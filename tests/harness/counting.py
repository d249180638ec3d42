"""A local store that counts the index files read from it: whether a load took them from
the repository or from this host's copies."""

from __future__ import annotations

from lifeboat.storage.local import LocalStorage


class CountingIndexReads(LocalStorage):
    """``LocalStorage`` counting GETs under ``index/``."""

    index_reads = 0

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name.startswith("index/"):
            self.index_reads += 1
        return super().get(name, offset, length)
