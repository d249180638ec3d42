"""Chunk encoding: fixed-size blocks, compressed with zstd when that pays off, then padded.

Padding (Padmé, crypto/padding.py) comes after compression: a compressed length is a
fingerprint of known content. A body whose length already is a Padmé length (every full
raw chunk of a power-of-two chunk size, 1 MiB file chunks, 128 KiB PostgreSQL ones) is
stored unpadded: the one framing byte would push it to the next step (1 MiB -> 1 MiB +
32 KiB, 3.1 % for nothing), and its length is one padding would produce anyway.

Fixed, aligned blocks (not content-defined chunking) because the data we protect changes
in place: PostgreSQL rewrites 8 KiB pages, media objects are replaced whole, files grow
at the end. Aligned blocks dedup all three, cost nothing to find, and let restores write
blocks at known offsets in parallel.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import IO

import zstandard

from lifeboat.crypto.padding import PAD_MARK, padded_length, unpadded
from lifeboat.errors import IntegrityError
from lifeboat.repo.format import (
    BLOB_RAW,
    BLOB_RAW_PADDED,
    BLOB_ZSTD,
    BLOB_ZSTD_PADDED,
    MAX_BLOB_SIZE,
    bounded_decompress,
)

DEFAULT_CHUNK_SIZE = 1 << 20
# Files below this size are read (backup, by the walk's thread) and written (restore) by
# one thread, not a pool: storing or restoring one costs less than handing the GIL between
# threads, and every open, read, write and close releases it, so with several threads each
# release wakes another. 30,000 files of 0.5-4 KB backed up by four readers made 1.67
# million futex calls and 3.9 s of system time; one reader beside the walk, 154,000 and
# 0.9 s (docs/design/internals.md).
SMALL_FILE = 64 << 10
MIN_CHUNK_SIZE = 8 << 10
MAX_CHUNK_SIZE = 16 << 20
PROBE_SIZE = 16 << 10

# zstd level 1, measured on 128 KiB and 1 MiB chunks (bench data, this machine): PostgreSQL
# heap pages 710-740 MB/s at ratio 5.3-5.4 vs level 3's 380-610 MB/s at 4.8-5.0; WAL 640-690
# MB/s at 4.2 vs 300-440 at 3.8-4.1; mixed text within 3% of level 3's ratio. Faster and,
# for the data we protect most, smaller.
LEVEL = 1

_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    comp: zstandard.ZstdCompressor | None = getattr(_local, "comp", None)
    if comp is None:
        comp = zstandard.ZstdCompressor(level=LEVEL)
        _local.comp = comp
    return comp


def _probe() -> zstandard.ZstdCompressor:
    probe: zstandard.ZstdCompressor | None = getattr(_local, "probe", None)
    if probe is None:
        probe = zstandard.ZstdCompressor(level=1)
        _local.probe = probe
    return probe


def looks_incompressible(data: bytes) -> bool:
    """A probe of one sample: already-compressed media is common, and compressing a whole
    chunk only to throw the result away costs far more than a 16 KiB look."""
    if len(data) < 2 * PROBE_SIZE:
        return False
    middle = len(data) // 2
    sample = data[middle : middle + PROBE_SIZE]
    return len(_probe().compress(sample)) >= PROBE_SIZE * 0.97


_PADDED = {BLOB_RAW: BLOB_RAW_PADDED, BLOB_ZSTD: BLOB_ZSTD_PADDED}


def _framed(encoding: int, body: bytes) -> bytes:
    """The payload: ``body`` padded to its Padmé length (a padded encoding), or as is when
    its length already is one (every full raw chunk)."""
    if padded_length(len(body)) == len(body):
        return bytes([encoding]) + body
    zeros = padded_length(len(body) + 1) - len(body) - 1
    return b"".join((bytes([_PADDED[encoding]]), body, bytes([PAD_MARK]), bytes(zeros)))


def encode_payload(data: bytes) -> bytes:
    """Compress when it saves at least 3% (incompressible media is stored as is), then pad."""
    if looks_incompressible(data):
        return _framed(BLOB_RAW, data)
    compressed = _compressor().compress(data)
    if len(compressed) < len(data) * 0.97:
        return _framed(BLOB_ZSTD, compressed)
    return _framed(BLOB_RAW, data)


def decode_payload(payload: bytes, raw_length: int) -> bytes:
    """The plaintext, which must be exactly ``raw_length`` bytes: decompression stops one
    byte past it (and past MAX_BLOB_SIZE), so a crafted blob cannot balloon in memory
    before its id is checked."""
    if not payload:
        raise IntegrityError("blob payload is empty")
    if not 0 <= raw_length <= MAX_BLOB_SIZE:
        raise IntegrityError(f"blob claims an impossible length ({raw_length} bytes)")
    encoding = payload[0]
    body = memoryview(payload)[1:]  # copied once at most (a raw blob), not once a step
    if encoding == BLOB_RAW:
        data = body.tobytes()
    elif encoding == BLOB_ZSTD:
        data = bounded_decompress(body, raw_length, "blob")
    elif encoding == BLOB_RAW_PADDED:
        data = unpadded(body).tobytes()
    elif encoding == BLOB_ZSTD_PADDED:
        data = bounded_decompress(unpadded(body), raw_length, "blob")
    else:
        raise IntegrityError(f"unknown blob encoding 0x{payload[0]:02x}")
    if len(data) != raw_length:
        raise IntegrityError(f"blob is {len(data)} bytes, not the recorded {raw_length}")
    return data


def read_blocks(stream: IO[bytes], size: int) -> Iterator[bytes]:
    """Yield full blocks of ``size`` bytes (the last may be shorter) from any stream."""
    while True:
        block = stream.read(size)
        if not block:
            return
        while len(block) < size:
            more = stream.read(size - len(block))
            if not more:
                break
            block += more
        yield block
        if len(block) < size:
            return
