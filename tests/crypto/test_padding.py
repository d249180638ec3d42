"""Padmé padding: the lengths it produces, what it costs, and that it round-trips."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifeboat.crypto.padding import (
    MAX_TAIL_WINDOW,
    TAIL_WINDOW,
    max_overhead,
    overhead,
    pad,
    padded_length,
    unpad,
    unpadded,
)
from lifeboat.errors import IntegrityError


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, 0),
        (1, 1),
        (2, 2),
        (9, 10),  # E=3, S=2: one low bit cleared
        (100, 104),  # E=6, S=3: three low bits cleared
        (1000, 1024),
        (1 << 20, 1 << 20),  # a power of two is already aligned
        ((1 << 20) + 1, (1 << 20) + (1 << 15)),  # E=20, S=5: 15 low bits cleared
        (16 * 1024 * 1024 - 5, 16 * 1024 * 1024),
    ],
)
def test_padme_lengths(n: int, expected: int) -> None:
    assert padded_length(n) == expected


def test_padding_hides_exact_sizes_of_similar_files() -> None:
    # a known 1 MiB file and its versions 1-30000 bytes longer all look the same size
    sizes = {padded_length((1 << 20) + extra) for extra in range(1, 30_000)}
    assert sizes == {(1 << 20) + (1 << 15)}


def test_overhead_is_bounded_and_falls_as_objects_grow() -> None:
    worst_from = {}
    for start in (256, 64 << 10, 4 << 30):
        worst = max(overhead(n) for n in range(start, start * 4, max(1, start // 4096)))
        worst_from[start] = worst
        assert worst <= max_overhead(start)
    assert max_overhead(256) == 1 / 16 and max_overhead(64 << 10) == 1 / 32
    assert max(overhead(n) for n in range(2, 100_000)) < 0.12
    assert worst_from[256] > worst_from[64 << 10] > worst_from[4 << 30]


@given(st.binary(max_size=5000), st.integers(min_value=0, max_value=2048))
def test_pad_round_trips_to_a_padme_length(data: bytes, min_size: int) -> None:
    padded = pad(data, min_size)
    assert len(padded) == padded_length(len(padded)) >= max(len(data) + 1, min_size)
    assert unpad(padded) == data


def test_unpad_refuses_a_missing_mark() -> None:
    with pytest.raises(IntegrityError, match="no padding mark"):
        unpad(b"abc\x00\x00")
    with pytest.raises(IntegrityError):
        unpad(b"")


@pytest.mark.parametrize(
    "zeros", [0, 1, TAIL_WINDOW - 1, TAIL_WINDOW, 3 * TAIL_WINDOW + 5, 2 * MAX_TAIL_WINDOW + 7]
)
def test_a_view_is_unpadded_wherever_its_mark_is(zeros: int) -> None:
    """A blob is unpadded as a view of its decrypted bytes; the mark is found however many
    zeros follow it (a crafted object may carry more than Padmé ever adds)."""
    body = os.urandom(1000) + b"\x00\x80\x00"  # zeros and a mark inside the body stay
    padded = body + b"\x80" + bytes(zeros)
    assert unpadded(memoryview(padded)[0:]).tobytes() == body
    assert unpad(padded) == body
    with pytest.raises(IntegrityError, match="no padding mark"):
        unpadded(bytes(zeros) + b"\x01" + bytes(zeros))
    with pytest.raises(IntegrityError, match="no padding mark"):
        unpadded(bytes(zeros + 1))
