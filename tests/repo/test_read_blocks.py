"""Blocks read from a file or any stream (repo/chunking.read_blocks): every byte once, in
blocks of the chunk size, whether the file is smaller than a block, exactly a block, a
block and a byte, grows while it is read, is a pipe, or is read from the middle."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from lifeboat.repo.chunking import read_blocks

BLOCK = 1000


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 2500])
def test_a_file_comes_back_whole_in_blocks(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    with open(path, "rb", buffering=0) as fh:
        blocks = list(read_blocks(fh, BLOCK))
    assert b"".join(blocks) == data
    assert all(len(b) == BLOCK for b in blocks[:-1]) and all(blocks)


def test_a_file_read_from_its_middle_gives_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * 300 + b"b" * 400)
    with open(path, "rb", buffering=0) as fh:
        fh.seek(300)
        assert list(read_blocks(fh, BLOCK)) == [b"b" * 400]


def test_a_file_that_grew_since_its_size_was_taken_is_read_to_its_end(tmp_path: Path) -> None:
    """Bytes appended once reading has begun still come, in full blocks."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)

    class Growing(io.FileIO):
        grown = False

        def read(self, size: int = -1) -> bytes:
            if not self.grown:
                self.grown = True
                with open(path, "ab") as out:
                    out.write(b"y" * 1500)
            return super().read(size)

    with Growing(path, "rb") as fh:
        blocks = list(read_blocks(fh, BLOCK))
    assert b"".join(blocks) == b"x" * 10 + b"y" * 1500 and len(blocks[0]) == BLOCK


def test_streams_without_a_file_behind_them(tmp_path: Path) -> None:
    assert list(read_blocks(io.BytesIO(b"z" * 2100), BLOCK)) == [b"z" * 1000, b"z" * 1000, b"z" * 100]
    read_end, write_end = os.pipe()
    os.write(write_end, b"p" * 1200)
    os.close(write_end)
    with open(read_end, "rb", buffering=0) as fh:
        assert b"".join(read_blocks(fh, BLOCK)) == b"p" * 1200
