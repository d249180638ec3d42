"""The backup host's local memory of its last snapshot per asset.

Maps an asset-chosen identity (path|size|mtime|inode, key|version|etag, ...) to the entry
that content produced, so unchanged files and objects are not read again. It lives on the
backup host (which sees the plaintext anyway), never in the repository.

Two forms share the file. ``ParentCache`` (objects and the other kinds, which add entries
in any order) holds it whole as a dict: ``WHOLE_MAGIC`` then ``<mac>\t<identity>\t<entry>``
lines. A walked tree (the files kind, a ``dir://`` objects source, key material) writes the
stream form, ``PARENTS_MAGIC`` then ``<path>\t<identity>\t<entry>`` lines in walk order,
each block of them (at most ``BLOCK_LINES`` lines, fewer past ``BLOCK_BYTES``) followed by
a ``#<mac>`` line, and ``ParentStream`` reads it alongside the next walk, one block at a
time: memory does not grow with the number of files. Each reads the other's form (a
switch costs no full re-read). Fields are JSON, which never holds a raw tab or newline, nor
starts with ``#``.

What is MAC'd is under a key derived from the repository's MAC key (in the key file) for
this asset (``ParentFile``): each whole-form line (a keyed BLAKE2b), each stream-form block
(a keyed BLAKE3). The cache lives in the state dir, the key file does not: a walk takes a
cached entry without reading the file, so somebody who may rewrite the state dir but does
not hold the key file could otherwise make the next backup record a file with other
chunks. A line or block that fails its MAC is not used (its files are read again, counted
and warned of: deleting a line from a block is such a change); deleting, reordering or
cutting whole blocks or whole-form lines only costs reads, since each is a statement about
files' identities that was true when written. One MAC per block, not per line: a MAC per
line was a tenth of an unchanged backup of 100,000 small files. The earlier stream form
(``LINE_MAC_MAGIC``, a MAC on every line) is still read, so an upgrade costs no full
re-read; caches of the earlier unauthenticated forms, and the blocks MAC'd with BLAKE2b
that unreleased builds wrote as form 3, are not read at all (their files are read once
more, without a warning). A key material cache is also sealed whole, its compressed bytes
encrypted block by block (``_SealedReader``); one of the earlier form, whose entries were
sealed one by one, is not read (its files are read once more).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import blake3
import orjson
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lifeboat.errors import ConfigError
from lifeboat.private import private_dir, replacing_private
from lifeboat.repo.model import Entry

PARENTS_MAGIC = b"lifeboat-parents-stream 4"  # the stream form as written: a MAC per block
LINE_MAC_MAGIC = b"lifeboat-parents-stream 2"  # the stream form with a MAC per line (read only)
WHOLE_MAGIC = b"lifeboat-parents 2"
SAVE_BATCH = 1024  # lines written to a whole-form cache at a time
CACHE_KEY_INFO = b"lifeboat/parent-cache/v1\x00"
MAC_HEX = 32  # a 16-byte MAC, in hex
# longer than any form's first line: the first form was one JSON document without a newline
MAGIC_LINE_MAX = 64
BLOCK_MARK = b"#"  # starts the line that carries the MAC of the stream-form lines before it
BLOCK_LINES = 512  # lines a writer puts in one block at most; a reader holds no more
BLOCK_BYTES = 1 << 20  # a writer ends a block once it holds this much (files of many chunks)


def cache_key_of(mac: Callable[[bytes], bytes], asset: str) -> bytes:
    """The key an asset's parent cache is MAC'd with: from the repository's MAC key (in every
    key file, never in the state dir, and kept by ``keys rotate``, so a rotated host keeps
    its cache), one per asset, so a cache moved between assets or repositories fails too."""
    return mac(CACHE_KEY_INFO + asset.encode())


@dataclass(frozen=True)
class ParentFile:
    """An asset's parent cache: where it lives and the key its lines (or blocks) are MAC'd with. A
    ``seal_key`` also keeps the whole file encrypted under it (``_SealedReader``): key
    material's entries carry a plain SHA-256 of the file, which an insider who reads the
    state dir could test guesses of a short secret (a PIN file) against."""

    path: Path
    key: bytes = field(repr=False)
    seal_key: bytes | None = field(default=None, repr=False)

    @property
    def sealed(self) -> bool:
        """Whether the file is written and read as sealed blocks."""
        return self.seal_key is not None

    @cached_property
    def _cipher(self) -> ChaCha20Poly1305:
        assert self.seal_key is not None
        return ChaCha20Poly1305(hashlib.blake2b(key=self.seal_key, digest_size=32, person=SEAL_FORM).digest())

    def open_content(self) -> IO[bytes]:
        """The cache's lines, decompressed (and unsealed) as they are read: OSError when
        there is none, ``SealBroken`` (an OSError) where a sealed one was rewritten."""
        fh = open(self.path, "rb")  # noqa: SIM115 - the stream reader below closes it
        try:
            source: IO[bytes] = _SealedReader(fh, self._cipher) if self.sealed else fh  # type: ignore[assignment]
        except BaseException:
            fh.close()
            raise
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(source, closefd=True))

    def content_writer(self, fh: IO[bytes]) -> Any:
        """A zstandard stream writer into ``fh`` (sealing what it writes, when sealed); closing
        it closes ``fh``. One zstd worker thread compresses while the walk goes on (the
        compressor's calls release the interpreter): compressing the lines on the walk's own
        thread was a twentieth of an unchanged backup of 100,000 small files."""
        sink: IO[bytes] = _SealedWriter(fh, self._cipher) if self.sealed else fh  # type: ignore[assignment]
        return zstandard.ZstdCompressor(level=1, threads=1).stream_writer(sink, closefd=True)

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

    @cached_property
    def _block_key(self) -> bytes:
        return hashlib.blake2b(key=self.key, digest_size=32, person=BLOCK_FORM).digest()

    def _block_mac(self, lines: bytes) -> bytes:
        # keyed BLAKE3: a block MAC covers every byte of the cache, and BLAKE2b over them
        # cost as much as the per-line MACs it replaced (~0.8 GB/s against ~5.7 GB/s here)
        return blake3.blake3(lines, key=self._block_key).hexdigest(length=MAC_HEX // 2).encode()

    def sealed_block(self, lines: bytes) -> bytes:
        """Stream-form lines (each ending in a newline) followed by the line with their MAC."""
        return lines + BLOCK_MARK + self._block_mac(lines) + b"\n"

    def block_holds(self, lines: bytes, mark_line: bytes) -> bool:
        """Whether ``mark_line`` (``#<mac>``, its newline stripped or not) is the MAC of
        ``lines`` as read, newlines included."""
        mac = mark_line[len(BLOCK_MARK) :].rstrip(b"\n")
        return len(mac) == MAC_HEX and hmac.compare_digest(mac, self._block_mac(lines))

    def verified_stream(
        self, magic: bytes, lines: Iterable[bytes], reject: Callable[[int], None]
    ) -> Iterator[bytes]:
        """The fields of each line of a stream-form cache (after its magic line) whose MAC
        holds, newlines stripped; ``reject`` is told how many lines failed. Either stream
        form: a MAC per line (``LINE_MAC_MAGIC``) or per block (``PARENTS_MAGIC``). Lines
        after the last block's MAC line (a cut cache) count as failed; a block of more lines
        than any writer puts in one is not held to be verified: it and the rest of the cache
        are not used (only its lines are counted). Blank lines between blocks are skipped
        (the older form skipped every blank line)."""
        if magic == LINE_MAC_MAGIC:
            for raw in lines:
                line = raw.rstrip(b"\n")
                if line:
                    rest = self.verified(line, STREAM_FORM)
                    if rest is None:
                        reject(1)
                    else:
                        yield rest
            return
        block: list[bytes] = []
        for raw in lines:
            if not raw.startswith(BLOCK_MARK):
                if block or raw != b"\n":
                    block.append(raw)
                    if len(block) > BLOCK_LINES:
                        reject(len(block))
                        return
                continue
            if self.block_holds(b"".join(block), raw):
                yield from (line.rstrip(b"\n") for line in block if line != b"\n")
            else:
                reject(len(block))
            block = []
        if block:
            reject(len(block))


class SealBroken(OSError):
    """A sealed cache whose blocks do not open: rewritten, cut or damaged."""


class _SealedReader(io.RawIOBase):
    """A sealed cache's compressed bytes: ``SEALED_MAGIC``, then blocks of
    ``u32be(length | FINAL_BIT) nonce ciphertext``, each sealed with its number and whether
    it is the last as associated data: a block moved elsewhere does not open, and a cache cut
    at a block boundary (or after its header) lacks its final block and is refused, not read
    as a shorter cache. One decryption a block of ``SEAL_BLOCK`` bytes, not one per entry:
    30,000 key files sealed one by one took a sixth of their unchanged backup to open."""

    def __init__(self, fh: IO[bytes], cipher: ChaCha20Poly1305) -> None:
        super().__init__()
        self._fh = fh
        self._cipher = cipher
        self._block = b""
        self._at = 0
        self._number = 0
        self._ended = False
        head = fh.read(len(SEALED_MAGIC))
        if head.startswith(ZSTD_FRAME) or head == EARLIER_SEALED_MAGIC:  # read the files once more
            raise OSError(0, "a parent cache of an earlier form")
        if head != SEALED_MAGIC:
            raise SealBroken(0, "not a sealed parent cache")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._at == len(self._block) and not self._next_block():
            return 0
        size = min(len(buffer), len(self._block) - self._at)
        buffer[:size] = self._block[self._at : self._at + size]
        self._at += size
        return size

    def _next_block(self) -> bool:
        head = self._fh.read(4)
        if self._ended:
            if head:
                raise SealBroken(0, "a sealed parent cache with bytes after its final block")
            return False
        framed = int.from_bytes(head, "big")
        size, final = framed & ~FINAL_BIT, bool(framed & FINAL_BIT)
        if size > NONCE_BYTES + SEAL_BLOCK + TAG_BYTES:  # not read: a forged length could ask for 2 GiB
            raise SealBroken(0, "a sealed parent cache block longer than any this version writes")
        body = self._fh.read(size) if len(head) == 4 else b""
        if len(head) != 4 or len(body) != size:
            raise SealBroken(0, "a sealed parent cache cut short")
        try:
            self._block = self._cipher.decrypt(
                body[:NONCE_BYTES], body[NONCE_BYTES:], _block_ad(self._number, final)
            )
        except (InvalidTag, ValueError):
            raise SealBroken(0, "a sealed parent cache block does not open") from None
        self._number += 1
        self._ended = final
        self._at = 0
        return bool(self._block) or self._next_block()

    def close(self) -> None:
        self._fh.close()
        super().close()


def _block_ad(number: int, final: bool) -> bytes:
    """A sealed block's associated data: where it stands, and whether the cache ends with it."""
    return number.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


class _SealedWriter(io.RawIOBase):
    """Writes ``_SealedReader``'s form: what it is given, sealed ``SEAL_BLOCK`` bytes at a time."""

    def __init__(self, fh: IO[bytes], cipher: ChaCha20Poly1305) -> None:
        super().__init__()
        self._fh = fh
        self._cipher = cipher
        self._pending = bytearray()
        self._number = 0
        fh.write(SEALED_MAGIC)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._pending += data
        while len(self._pending) > SEAL_BLOCK:  # never the last bytes: close seals them as final
            self._seal(bytes(self._pending[:SEAL_BLOCK]), final=False)
            del self._pending[:SEAL_BLOCK]
        return len(data)

    def _seal(self, block: bytes, final: bool) -> None:
        nonce = os.urandom(NONCE_BYTES)
        body = nonce + self._cipher.encrypt(nonce, block, _block_ad(self._number, final))
        self._fh.write((len(body) | (FINAL_BIT if final else 0)).to_bytes(4, "big") + body)
        self._number += 1

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._seal(bytes(self._pending), final=True)  # even empty: the reader needs an end
            self._pending.clear()
        finally:
            try:
                self._fh.close()
            finally:
                super().close()  # closed even when the file's close fails: no second seal later


STREAM_FORM = b"lb-parents-strm"  # BLAKE2b personalisation (at most 16 bytes): one per form
BLOCK_FORM = b"lb-parents-block"  # personalises the derivation of the key blocks are MAC'd with
WHOLE_FORM = b"lb-parents-whole"
SEAL_FORM = b"lb-parents-seal"  # ... and one for the key that seals a sealed cache
NONCE_BYTES = 12
TAG_BYTES = 16  # ChaCha20-Poly1305's
SEALED_MAGIC = b"lifeboat-parents-sealed 2\n"  # a sealed cache's first bytes (not compressed)
EARLIER_SEALED_MAGIC = b"lifeboat-parents-sealed 1\n"  # blocks without a final flag
FINAL_BIT = 1 << 31  # in a sealed block's length: the cache's last block
SEAL_BLOCK = 256 << 10  # compressed bytes a sealed block holds
ZSTD_FRAME = b"\x28\xb5\x2f\xfd"  # how every unsealed cache starts


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
        # read line by line, never whole: a million files' cache is ~500 MB uncompressed,
        # and one of a form this version does not read is left after its first line
        try:
            with file.open_content() as content:
                first = content.readline(MAGIC_LINE_MAX).rstrip(b"\n")
                self.entries = self._entries(file, first, content)
        except SealBroken:
            self.rejected += 1  # the rest of the file (lines refused before it are counted too)
        except (OSError, zstandard.ZstdError):
            pass  # a damaged cache: its files are read again

    def _entries(self, file: ParentFile, first: bytes, lines: Iterable[bytes]) -> dict[bytes, bytes]:
        entries: dict[bytes, bytes] = {}
        if first in (PARENTS_MAGIC, LINE_MAC_MAGIC):
            for rest in file.verified_stream(first, lines, self._reject):
                fields = rest.split(b"\t", 2)
                if len(fields) == 3:
                    entries[fields[1]] = fields[2]
        elif first == WHOLE_MAGIC:
            for raw in lines:
                line = raw.rstrip(b"\n")
                verified = file.verified(line, WHOLE_FORM) if line else b""
                self.rejected += verified is None
                fields = verified.split(b"\t", 2) if verified else []
                if len(fields) == 2:
                    entries[fields[0]] = fields[1]
        # else an earlier form (unauthenticated, or unreleased): everything is read once more
        return entries

    def _reject(self, lines: int) -> None:
        self.rejected += lines

    def lookup(self, identity: str) -> Entry | None:
        """The parent's entry with this identity, if any."""
        return decoded_entry(self.lookup_encoded(identity))

    def lookup_encoded(self, identity: str) -> bytes | None:
        """The parent's entry with this identity as stored (its JSON), if any."""
        return self.entries.get(orjson.dumps(identity))

    def save_encoded(self, entries: Iterable[tuple[str, bytes]]) -> None:
        """Save (identity, entry JSON) pairs, replacing the cache. The lines are written a
        batch at a time, not joined whole first: the cache of a 20,000-object bucket was
        ~25 MB held at the commit, the backup's peak of memory."""
        file = self.file
        if file is None:
            return
        self.entries = {}  # the old generation is not needed any more: free it first
        lines = (file.line(orjson.dumps(identity) + b"\t" + entry, WHOLE_FORM) for identity, entry in entries)
        try:
            private_dir(file.path.parent)
            with replacing_private(file.path) as fh, file.content_writer(fh) as out:
                out.write(WHOLE_MAGIC)
                batch: list[bytes] = []
                for line in lines:
                    batch.append(line)
                    if len(batch) == SAVE_BATCH:
                        out.write(b"\n" + b"\n".join(batch))
                        batch.clear()
                if batch:
                    out.write(b"\n" + b"\n".join(batch))
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
    streams): one block of the cache is held at a time. A cache in the whole form (written by
    an older version) is loaded whole once, as before."""

    def __init__(self, file: ParentFile | None) -> None:
        self._whole: ParentCache | None = None
        self._lines: Iterator[bytes] = iter(())
        self._current: tuple[str, bytes, bytes] | None = None  # path, identity (JSON), entry
        self._current_line = b""  # the verified fields _current came from (a line, MAC'd by its block)
        self._matched: tuple[str, str, bytes, bytes] | None = None  # see matched_line
        self._fh: IO[bytes] | None = None
        self._rejected = 0
        if file is not None:
            self._open(file)

    @property
    def rejected(self) -> int:
        """Lines read so far whose MAC failed: somebody rewrote the cache."""
        return self._rejected + (self._whole.rejected if self._whole is not None else 0)

    def _open(self, file: ParentFile) -> None:
        try:
            reader = file.open_content()  # closed by close(), after the walk
        except SealBroken:
            self._rejected += 1
            return
        except OSError:
            return
        try:
            first = reader.readline(MAGIC_LINE_MAX).rstrip(b"\n")
        except (OSError, zstandard.ZstdError) as exc:
            self._rejected += isinstance(exc, SealBroken)
            reader.close()
            return
        if first not in (PARENTS_MAGIC, LINE_MAC_MAGIC):
            reader.close()
            if first == WHOLE_MAGIC:  # any other form is not read: its files are read again
                self._whole = ParentCache(file)
            return
        self._fh = reader
        self._lines = file.verified_stream(first, reader, self._reject)
        self._advance()

    def _advance(self) -> None:
        self._current = None
        try:
            for line in self._lines:
                fields = line.split(b"\t", 2)
                if len(fields) == 3:
                    path = orjson.loads(fields[0])
                    if type(path) is str:
                        self._current = (path, fields[1], fields[2])
                        self._current_line = line
                        return
        except (OSError, ValueError, zstandard.ZstdError) as exc:
            self._rejected += isinstance(
                exc, SealBroken
            )  # a damaged cache ends here: the rest is read from the files
        self.close()

    def _reject(self, lines: int) -> None:
        self._rejected += lines

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
        line, entry = self._current_line, current[2]
        self._advance()
        self._matched = (path, identity, entry, line)
        return entry

    def matched_line(self, path: str, identity: str, entry: bytes) -> bytes | None:
        """The verified cache line of the last ``lookup`` when it found this very file (its
        fields, without a MAC): an unchanged file's line for the next cache, as is (no second
        encoding)."""
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
        self._fh: IO[bytes] | None = None  # under _out: closed here if _out's close fails
        self._out: Any = None
        # one block: a compressor call and a MAC per file cost more than the line
        self._lines: list[bytes] = []
        self._block_bytes = 0
        if file is None:
            return
        try:
            private_dir(file.path.parent)
            tmp = file.path.with_name(file.path.name + ".new")
            tmp.unlink(missing_ok=True)  # a crashed run's, or a link planted there: never written through
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except (OSError, ConfigError):  # a read-only state dir: losing the cache costs a full read
            return
        self._tmp = tmp
        self._fh = os.fdopen(fd, "wb")
        self._out = file.content_writer(self._fh)
        self._out.write(PARENTS_MAGIC + b"\n")

    def add(self, path: str, identity: str, entry: bytes) -> None:
        """One file of this run, in walk order, with its encoded entry."""
        if self._out is None or self.file is None:
            return
        self._append(orjson.dumps(path) + b"\t" + orjson.dumps(identity) + b"\t" + entry + b"\n")

    def add_line(self, line: bytes) -> None:
        """An unchanged file's verified line of the parent cache (``ParentStream.matched_line``):
        same path, identity and entry, so the same line."""
        if self._out is None or self.file is None:
            return
        self._append(line + b"\n")

    def _append(self, line: bytes) -> None:
        self._lines.append(line)
        self._block_bytes += len(line)
        if len(self._lines) >= BLOCK_LINES or self._block_bytes >= BLOCK_BYTES:
            self._write_lines()

    def _write_lines(self) -> None:
        lines, self._lines, self._block_bytes = self._lines, [], 0
        if self._out is None or self.file is None or not lines:
            return
        try:
            self._out.write(self.file.sealed_block(b"".join(lines)))
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
        self._out = self._fh = None

    def discard(self) -> None:
        """Drops what this run wrote (the old cache stays)."""
        self._lines, self._block_bytes = [], 0
        for stream in (self._out, self._fh):  # a full disk fails the compressor's last flush
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self._out = self._fh = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
