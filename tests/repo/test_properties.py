"""Property tests for the pure parts: chunking, payload encoding, retention, durations."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from lifeboat.policy import Window, format_duration, parse_duration
from lifeboat.repo import KeepRules, select_keep
from lifeboat.repo.chunking import decode_payload, encode_payload, read_blocks
from lifeboat.repo.model import SnapshotInfo, SnapshotStats


class Trickle(io.RawIOBase):
    """A stream that returns at most ``step`` bytes per read, as pipes and sockets do."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        chunk = self.data[self.pos : self.pos + min(n if n >= 0 else self.step, self.step)]
        self.pos += len(chunk)
        return chunk


@given(st.binary(max_size=5000), st.integers(1, 700), st.integers(1, 300))
def test_blocks_are_full_and_reassemble(data, size, step):
    blocks = list(read_blocks(Trickle(data, step), size))  # type: ignore[arg-type]
    assert b"".join(blocks) == data
    assert all(len(b) == size for b in blocks[:-1])


@given(st.binary(max_size=70_000))
@settings(max_examples=50)
def test_payload_round_trip(data):
    assert decode_payload(encode_payload(data), len(data)) == data


times = st.lists(st.integers(0, 400 * 24), min_size=1, max_size=60, unique=True)
rules = st.builds(
    KeepRules,
    last=st.integers(0, 3),
    daily=st.integers(0, 8),
    weekly=st.integers(0, 5),
    monthly=st.integers(0, 13),
    min_days=st.integers(0, 40),
)


@given(times, rules)
def test_retention_keeps_the_newest_and_everything_young(hours_ago, rule):
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)
    snaps = [
        SnapshotInfo(f"{h:064x}", "a", "files", now - timedelta(hours=h), "h", {}, SnapshotStats(), [], "k")
        for h in hours_ago
    ]
    keep = select_keep(snaps, rule, now)
    newest = min(snaps, key=lambda s: now - s.time)
    if not rule.keeps_everything:
        assert newest.id in keep or (rule.last == 0 and not any((rule.daily, rule.weekly, rule.monthly)))
    for s in snaps:
        if now - s.time < timedelta(days=rule.min_days):
            assert s.id in keep


@given(st.integers(0, 10**7))
def test_duration_round_trip(seconds):
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@given(st.integers(0, 23), st.integers(0, 23), st.integers(0, 23 * 60 + 59))
def test_window_contains_its_start_and_not_its_end(start, end, minute):
    from datetime import time

    window = Window(start=time(start), end=time(end))
    assert window.contains(time(start))
    if start != end:
        assert not window.contains(time(end))
    moment = time(minute // 60, minute % 60)
    inside = window.contains(moment)
    if start < end:
        assert inside == (time(start) <= moment < time(end))
    elif start > end:
        assert inside == (moment >= time(start) or moment < time(end))
