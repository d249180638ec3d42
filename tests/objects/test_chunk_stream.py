"""The file-like view a restore uploads from returns exactly the snapshot's chunks, read in
any pattern (pure logic: the chunks are bytes in memory)."""

from __future__ import annotations

import io
import random

import pytest

from lifeboat.assets.objects.restore import ChunkStream

CHUNKS = [random.Random(n).randbytes(size) for n, size in enumerate((0, 10, 1 << 20, 5, 300_000, 0))]
WHOLE = b"".join(CHUNKS)


@pytest.mark.parametrize("size", [1, 7, 8192, 1 << 20, 4 << 20])
def test_reads_of_any_size_give_the_chunks_bytes(size: int) -> None:
    stream = io.BufferedReader(ChunkStream(iter(CHUNKS)), 1 << 20)
    parts = iter(lambda: stream.read(size), b"")
    assert b"".join(parts) == WHOLE


@pytest.mark.parametrize("first", [0, 3, 10, 100_000, len(WHOLE)])
def test_the_rest_read_at_once_follows_what_was_read(first: int) -> None:
    stream = io.BufferedReader(ChunkStream(iter(CHUNKS)), 1 << 20)
    head = stream.read(first)
    assert head + stream.read() == WHOLE
    assert stream.read() == b""


def test_a_raw_stream_read_whole_is_the_chunks_joined() -> None:
    raw = ChunkStream(iter(CHUNKS))
    buffer = bytearray(4)
    assert raw.readinto(buffer) == 4
    assert bytes(buffer) + raw.readall() == WHOLE
    assert raw.readall() == b""
