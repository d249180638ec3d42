"""The backup host's local memory of its last snapshot per asset.

Maps an asset-chosen identity (path|size|mtime|inode, key|version|etag, ...) to the entry
that content produced, so unchanged files and objects are not read again. It lives on the
backup host (which sees the plaintext anyway), never in the repository.

Two forms share the file. ``ParentCache`` (objects and the other kinds, which add entries
in any order) holds it whole as a dict. A walked tree (the files kind) writes the stream
form, ``PARENTS_MAGIC`` then ``<path>\t<identity>\t<entry>`` lines (each JSON) in walk
order, and ``ParentStream`` reads it alongside the next walk, one line at a time: memory
does not grow with the number of files. Each reads the other's form (a switch costs no
full re-read).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import zstandard

from lifeboat.errors import ConfigError
from lifeboat.private import private_dir, write_private
from lifeboat.repo.model import Entry


class ParentCache:
    """The parent snapshot's entries by identity, cached locally so unchanged files are not
    read again. Held as encoded JSON (identity -> entry), decoded only for the identity asked for:
    a dict per file was ~1 KB of memory per file of the parent snapshot.

    The file is zstd-compressed lines ``<identity as JSON>\t<entry as JSON>`` (JSON never
    holds a raw tab or newline); a cache in the older single-object form is still read."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[bytes, bytes] = {}  # identity (JSON-encoded) -> entry (JSON)
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            raw = zstandard.ZstdDecompressor().decompress(path.read_bytes())
        except (OSError, zstandard.ZstdError):
            return
        if raw.startswith(b"{"):
            self._load_legacy(raw)
            return
        entries: dict[bytes, bytes] = {}
        if raw.startswith(PARENTS_MAGIC):
            for line in raw.split(b"\n")[1:]:
                fields = line.split(b"\t", 2)
                if len(fields) == 3:
                    entries[fields[1]] = fields[2]
            self.entries = entries
            return
        for line in raw.split(b"\n"):
            key, sep, value = line.partition(b"\t")
            if sep:
                entries[key] = value
        self.entries = entries

    def _load_legacy(self, raw: bytes) -> None:
        try:
            data = orjson.loads(raw)
        except ValueError:
            return
        if isinstance(data, dict):
            self.entries = {orjson.dumps(k): orjson.dumps(v) for k, v in data.items()}

    def lookup(self, identity: str) -> Entry | None:
        """The parent's entry with this identity, if any."""
        return decoded_entry(self.lookup_encoded(identity))

    def lookup_encoded(self, identity: str) -> bytes | None:
        """The parent's entry with this identity as stored (its JSON), if any."""
        return self.entries.get(orjson.dumps(identity))

    def save(self, entries: dict[str, dict[str, Any]]) -> None:
        """Replaces the cache with this run's entries."""
        self.save_encoded((identity, orjson.dumps(entry)) for identity, entry in entries.items())

    def save_encoded(self, entries: Iterable[tuple[str, bytes]]) -> None:
        """Save (identity, entry JSON) pairs, replacing the cache."""
        if self.path is None:
            return
        self.entries = {}  # the old generation is not needed any more: free it first
        raw = b"\n".join(orjson.dumps(identity) + b"\t" + entry for identity, entry in entries)
        try:
            private_dir(self.path.parent)
            write_private(self.path, zstandard.ZstdCompressor(level=1).compress(raw))
        except (OSError, ConfigError):  # a read-only state dir: private_dir says ConfigError
            pass  # losing the cache only costs a full read next time


PARENTS_MAGIC = b"lifeboat-parents-stream 1"


def decoded_entry(encoded: bytes | None) -> Entry | None:
    """A parent's entry from its stored JSON (None for none, or for one that is damaged)."""
    if encoded is None:
        return None
    try:
        return Entry.from_json(orjson.loads(encoded))
    except (TypeError, ValueError):
        return None


def walk_key(path: str) -> list[str]:
    """A path's place in walk order: each directory before its content, names sorted."""
    return path.split("/")


class ParentStream:
    """The parent's files in walk order, looked up in walk order (a merge of two sorted
    streams): one line of the cache is held at a time. A cache in the whole form (written by
    an older version) is loaded whole once, as before."""

    def __init__(self, path: Path | None) -> None:
        self._whole: ParentCache | None = None
        self._lines: Iterator[bytes] = iter(())
        self._current: tuple[list[str], bytes, bytes] | None = None
        self._fh: IO[bytes] | None = None
        if path is not None:
            self._open(path)

    def _open(self, path: Path) -> None:
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed by close(), after the walk
        except OSError:
            return
        reader = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(fh, closefd=True))
        try:
            first = reader.readline().rstrip(b"\n")
        except (OSError, zstandard.ZstdError):
            reader.close()
            return
        if first != PARENTS_MAGIC:
            reader.close()
            self._whole = ParentCache(path)
            return
        self._fh = reader
        self._lines = iter(reader)
        self._advance()

    def _advance(self) -> None:
        self._current = None
        try:
            for line in self._lines:
                fields = line.rstrip(b"\n").split(b"\t", 2)
                if len(fields) == 3:
                    self._current = (walk_key(orjson.loads(fields[0])), fields[1], fields[2])
                    return
        except (OSError, ValueError, zstandard.ZstdError):
            pass  # a damaged cache ends here: the rest is read from the files
        self.close()

    def lookup(self, path: str, identity: str) -> bytes | None:
        """The parent's entry for the file at ``path`` as stored in its tree (its JSON, see
        ``decoded_entry``) if its identity is unchanged. Called in walk order; a path out of
        order is not found (and costs a read, nothing worse)."""
        if self._whole is not None:
            return self._whole.lookup_encoded(identity)
        key = walk_key(path)
        while self._current is not None and self._current[0] < key:
            self._advance()
        current = self._current
        if current is None or current[0] != key or current[1] != orjson.dumps(identity):
            return None
        self._advance()
        return current[2]

    def close(self) -> None:
        """Stops reading (the rest of the cache is not needed)."""
        self._whole = None
        self._lines = iter(())
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class ParentStreamWriter:
    """This run's files in walk order, written as the walk adds them; ``commit`` puts the
    new cache in place (after the snapshot committed), ``discard`` drops it."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._tmp: Path | None = None
        self._out: Any = None
        self._lines: list[bytes] = []  # written in groups: a compressor call per file cost more than the line
        if path is None:
            return
        try:
            private_dir(path.parent)
            tmp = path.with_name(path.name + ".new")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except (OSError, ConfigError):  # a read-only state dir: losing the cache costs a full read
            return
        self._tmp = tmp
        self._out = zstandard.ZstdCompressor(level=1).stream_writer(os.fdopen(fd, "wb"), closefd=True)
        self._out.write(PARENTS_MAGIC + b"\n")

    def add(self, path: str, identity: str, entry: bytes) -> None:
        """One file of this run, in walk order, with its encoded entry."""
        if self._out is None:
            return
        self._lines.append(orjson.dumps(path) + b"\t" + orjson.dumps(identity) + b"\t" + entry + b"\n")
        if len(self._lines) >= 512:
            self._write_lines()

    def _write_lines(self) -> None:
        lines, self._lines = self._lines, []
        if self._out is None:
            return
        try:
            self._out.write(b"".join(lines))
        except OSError:
            self.discard()

    def commit(self) -> None:
        """Replaces the cache with what this run wrote."""
        self._write_lines()
        if self._out is None or self._tmp is None or self.path is None:
            return
        try:
            self._out.close()
            os.replace(self._tmp, self.path)
        except OSError:
            self.discard()
        self._out = None

    def discard(self) -> None:
        """Drops what this run wrote (the old cache stays)."""
        self._lines = []
        if self._out is not None:
            try:
                self._out.close()
            except OSError:
                pass
            self._out = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
