"""The backup host's local memory of its last snapshot per asset.

Maps an asset-chosen identity (path|size|mtime|inode, key|version|etag, ...) to the entry
that content produced, so unchanged files and objects are not read again. It lives on the
backup host (which sees the plaintext anyway), never in the repository.

Two forms share the file. ``ParentCache`` (objects and the other kinds, which add entries
in any order) holds it whole as a dict: ``WHOLE_MAGIC`` then ``<mac>\t<identity>\t<entry>``
lines. A walked tree (the files kind) writes the stream form, ``PARENTS_MAGIC`` then
``<mac>\t<path>\t<identity>\t<entry>`` lines in walk order, and ``ParentStream`` reads it
alongside the next walk, one line at a time: memory does not grow with the number of files.
Each reads the other's form (a switch costs no full re-read). Fields are JSON, which never
holds a raw tab or newline.

Every line carries a keyed BLAKE2b of the rest of it, under a key derived from the
repository's MAC key (in the key file) for this asset (``ParentFile``). The cache lives in the state dir,
the key file does not: a walk takes a cached entry without reading the file, so somebody
who may rewrite the state dir but does not hold the key file could otherwise make the next
backup record a file with other chunks. A line that fails its MAC is not used (that file is
read again); caches of the earlier unauthenticated forms are not read at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import orjson
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lifeboat.errors import ConfigError
from lifeboat.private import private_dir, write_private
from lifeboat.repo.model import Entry

PARENTS_MAGIC = b"lifeboat-parents-stream 2"
WHOLE_MAGIC = b"lifeboat-parents 2"
CACHE_KEY_INFO = b"lifeboat/parent-cache/v1\x00"
MAC_HEX = 32  # a 16-byte BLAKE2b, in hex


def cache_key_of(mac: Callable[[bytes], bytes], asset: str) -> bytes:
    """The key an asset's parent cache is MAC'd with: from the repository's MAC key (in every
    key file, never in the state dir, and kept by ``keys rotate``, so a rotated host keeps
    its cache), one per asset, so a cache moved between assets or repositories fails too."""
    return mac(CACHE_KEY_INFO + asset.encode())


@dataclass(frozen=True)
class ParentFile:
    """An asset's parent cache: where it lives and the key its lines are MAC'd with. A
    ``sealed`` cache also keeps each entry encrypted under a key derived from that one: key
    material's entries carry a plain SHA-256 of the file, which an insider who reads the
    state dir could test guesses of a short secret (a PIN file) against."""

    path: Path
    key: bytes = field(repr=False)
    sealed: bool = False

    @cached_property
    def _cipher(self) -> ChaCha20Poly1305:
        return ChaCha20Poly1305(hashlib.blake2b(key=self.key, digest_size=32, person=SEAL_FORM).digest())

    def hide(self, entry: bytes) -> bytes:
        """An entry as this cache stores it (encrypted, in base64, when sealed)."""
        if not self.sealed:
            return entry
        nonce = os.urandom(NONCE_BYTES)
        return base64.b64encode(nonce + self._cipher.encrypt(nonce, entry, None))

    def reveal(self, stored: bytes) -> bytes | None:
        """An entry from what this cache stores (None: one it cannot open)."""
        if not self.sealed:
            return stored
        try:
            raw = base64.b64decode(stored, validate=True)
            return self._cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], None)
        except (ValueError, InvalidTag):
            return None

    def _mac(self, rest: bytes, form: bytes) -> bytes:
        return hashlib.blake2b(rest, key=self.key, digest_size=16, person=form).hexdigest().encode()

    def line(self, rest: bytes, form: bytes) -> bytes:
        """``rest`` (the tab-joined fields) with its MAC in front."""
        return self._mac(rest, form) + b"\t" + rest

    def verified(self, line: bytes, form: bytes) -> bytes | None:
        """The fields of a line whose MAC holds (None: forged, damaged or another form's)."""
        mac, sep, rest = line.partition(b"\t")
        if not sep or len(mac) != MAC_HEX or not hmac.compare_digest(mac, self._mac(rest, form)):
            return None
        return rest


STREAM_FORM = b"lb-parents-strm"  # BLAKE2b personalisation (at most 16 bytes): one per form
WHOLE_FORM = b"lb-parents-whole"
SEAL_FORM = b"lb-parents-seal"  # ... and one for the key that seals a sealed cache's entries
NONCE_BYTES = 12


class ParentCache:
    """The parent snapshot's entries by identity, cached locally so unchanged files are not
    read again. Held as encoded JSON (identity -> entry), decoded only for the identity asked for:
    a dict per file was ~1 KB of memory per file of the parent snapshot."""

    def __init__(self, file: ParentFile | None) -> None:
        self.file = file
        self.entries: dict[bytes, bytes] = {}  # identity (JSON-encoded) -> entry (JSON)
        self.rejected = 0  # lines whose MAC failed: somebody rewrote the cache
        if file is not None:
            self._load(file)

    def _load(self, file: ParentFile) -> None:
        try:
            raw = zstandard.ZstdDecompressor().decompress(file.path.read_bytes())
        except (OSError, zstandard.ZstdError):
            return
        first, _, body = raw.partition(b"\n")
        form = {PARENTS_MAGIC: STREAM_FORM, WHOLE_MAGIC: WHOLE_FORM}.get(first)
        if form is None:
            return  # an earlier, unauthenticated form: everything is read once more
        entries: dict[bytes, bytes] = {}
        for line in filter(None, body.split(b"\n")):
            rest = file.verified(line, form)
            self.rejected += rest is None
            fields = rest.split(b"\t", 2) if rest is not None else []
            if form == STREAM_FORM and len(fields) == 3:
                entries[fields[1]] = fields[2]
            elif form == WHOLE_FORM and len(fields) == 2:
                entries[fields[0]] = fields[1]
        self.entries = entries

    def lookup(self, identity: str) -> Entry | None:
        """The parent's entry with this identity, if any."""
        return decoded_entry(self.lookup_encoded(identity))

    def lookup_encoded(self, identity: str) -> bytes | None:
        """The parent's entry with this identity as stored (its JSON), if any."""
        stored = self.entries.get(orjson.dumps(identity))
        return stored if stored is None or self.file is None else self.file.reveal(stored)

    def save(self, entries: dict[str, dict[str, Any]]) -> None:
        """Replaces the cache with this run's entries."""
        self.save_encoded((identity, orjson.dumps(entry)) for identity, entry in entries.items())

    def save_encoded(self, entries: Iterable[tuple[str, bytes]]) -> None:
        """Save (identity, entry JSON) pairs, replacing the cache."""
        file = self.file
        if file is None:
            return
        self.entries = {}  # the old generation is not needed any more: free it first
        lines = (
            file.line(orjson.dumps(identity) + b"\t" + file.hide(entry), WHOLE_FORM)
            for identity, entry in entries
        )
        raw = b"\n".join([WHOLE_MAGIC, *lines])
        try:
            private_dir(file.path.parent)
            write_private(file.path, zstandard.ZstdCompressor(level=1).compress(raw))
        except (OSError, ConfigError):  # a read-only state dir: private_dir says ConfigError
            pass  # losing the cache only costs a full read next time


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

    def __init__(self, file: ParentFile | None) -> None:
        self._whole: ParentCache | None = None
        self._lines: Iterator[bytes] = iter(())
        self._current: tuple[str, bytes, bytes] | None = None  # path, identity (JSON), entry
        self._current_line = b""  # the verified line _current came from
        self._matched: tuple[str, str, bytes, bytes] | None = None  # see matched_line
        self._fh: IO[bytes] | None = None
        self._file = file
        self._rejected = 0
        if file is not None:
            self._open(file)

    @property
    def rejected(self) -> int:
        """Lines read so far whose MAC failed: somebody rewrote the cache."""
        return self._rejected + (self._whole.rejected if self._whole is not None else 0)

    def _open(self, file: ParentFile) -> None:
        try:
            fh = open(file.path, "rb")  # noqa: SIM115 - closed by close(), after the walk
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
            self._whole = ParentCache(file)
            return
        self._fh = reader
        self._lines = iter(reader)
        self._advance()

    def _advance(self) -> None:
        self._current = None
        try:
            for raw in self._lines:
                line = raw.rstrip(b"\n")
                if not line:
                    continue
                rest = self._file.verified(line, STREAM_FORM) if self._file else None
                self._rejected += rest is None
                fields = rest.split(b"\t", 2) if rest is not None else []
                if len(fields) == 3:
                    path = orjson.loads(fields[0])
                    if type(path) is str:
                        self._current = (path, fields[1], fields[2])
                        self._current_line = line
                        return
        except (OSError, ValueError, zstandard.ZstdError):
            pass  # a damaged cache ends here: the rest is read from the files
        self.close()

    def lookup(self, path: str, identity: str) -> bytes | None:
        """The parent's entry for the file at ``path`` as stored in its tree (its JSON, see
        ``decoded_entry``) if its identity is unchanged. Called in walk order; a path out of
        order is not found (and costs a read, nothing worse)."""
        self._matched = None
        if self._whole is not None:
            return self._whole.lookup_encoded(identity)
        current = self._current
        if current is not None and current[0] != path:  # the parent's files walked past
            key = walk_key(path)
            while current is not None and walk_key(current[0]) < key:
                self._advance()
                current = self._current
        if current is None or current[0] != path or current[1] != orjson.dumps(identity):
            return None
        line = self._current_line
        self._advance()
        entry = self._file.reveal(current[2]) if self._file is not None else None
        self._matched = (path, identity, entry, line) if entry is not None else None
        return entry

    def matched_line(self, path: str, identity: str, entry: bytes) -> bytes | None:
        """The verified cache line of the last ``lookup`` when it found this very file: an
        unchanged file's line for the next cache, as is (no second encoding and MAC)."""
        matched = self._matched
        if matched is None or matched[0] != path or matched[1] != identity or matched[2] is not entry:
            return None
        return matched[3]

    def close(self) -> None:
        """Stops reading (the rest of the cache is not needed)."""
        if self._whole is not None:
            self._rejected += self._whole.rejected
        self._whole = None
        self._lines = iter(())
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class ParentStreamWriter:
    """This run's files in walk order, written as the walk adds them; ``commit`` puts the
    new cache in place (after the snapshot committed), ``discard`` drops it."""

    def __init__(self, file: ParentFile | None) -> None:
        self.file = file
        self._tmp: Path | None = None
        self._out: Any = None
        self._lines: list[bytes] = []  # written in groups: a compressor call per file cost more than the line
        if file is None:
            return
        try:
            private_dir(file.path.parent)
            tmp = file.path.with_name(file.path.name + ".new")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except (OSError, ConfigError):  # a read-only state dir: losing the cache costs a full read
            return
        self._tmp = tmp
        self._out = zstandard.ZstdCompressor(level=1).stream_writer(os.fdopen(fd, "wb"), closefd=True)
        self._out.write(PARENTS_MAGIC + b"\n")

    def add(self, path: str, identity: str, entry: bytes) -> None:
        """One file of this run, in walk order, with its encoded entry."""
        if self._out is None or self.file is None:
            return
        rest = orjson.dumps(path) + b"\t" + orjson.dumps(identity) + b"\t" + self.file.hide(entry)
        self._lines.append(self.file.line(rest, STREAM_FORM) + b"\n")
        if len(self._lines) >= 512:
            self._write_lines()

    def add_line(self, line: bytes) -> None:
        """An unchanged file's verified line of the parent cache (``ParentStream.matched_line``):
        same path, identity and entry, so the same line."""
        if self._out is None or self.file is None:
            return
        self._lines.append(line + b"\n")
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
        if self._out is None or self._tmp is None or self.file is None:
            return
        try:
            self._out.close()
            os.replace(self._tmp, self.file.path)
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
