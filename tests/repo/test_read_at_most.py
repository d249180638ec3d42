"""What a described file read gives (the keys kind fingerprints what it stores): the whole
file up to the limit, one byte more when it is bigger, and what it holds now when it grew
after its size was looked up. Real files and a real pipe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lifeboat.repo.backup import _read_at_most


@pytest.mark.parametrize(
    ("size", "expected"), [(0, 0), (50, 50), (99, 99), (100, 100), (101, 101), (5000, 101)]
)
def test_a_file_is_read_whole_up_to_the_limit(tmp_path: Path, size: int, expected: int) -> None:
    path = tmp_path / "key.pem"
    data = os.urandom(size)
    path.write_bytes(data)
    with open(path, "rb", buffering=0) as fh:
        assert _read_at_most(fh, 101) == data[:expected]


def test_what_grew_after_its_size_was_taken_is_read_too() -> None:
    """A pipe's size is 0 whatever it holds: the stand-in for a file that grew meanwhile."""
    read_end, write_end = os.pipe()
    os.write(write_end, b"x" * 60)
    os.close(write_end)
    with open(read_end, "rb", buffering=0) as fh:
        assert _read_at_most(fh, 101) == b"x" * 60
