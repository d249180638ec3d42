"""WAL file names and LSN arithmetic (16 MiB segments, PostgreSQL's default)."""

from __future__ import annotations

import re
from dataclasses import dataclass

SEGMENT_SIZE = 16 << 20
SEGMENTS_PER_XLOGID = 0x100000000 // SEGMENT_SIZE
SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")


@dataclass(frozen=True, order=True)
class Segment:
    """A WAL segment: timeline, log and segment numbers."""

    timeline: int
    number: int  # absolute segment number: log * SEGMENTS_PER_XLOGID + seg

    @classmethod
    def parse(cls, name: str) -> Segment | None:
        """A segment from its file name."""
        match = SEGMENT_RE.match(name)
        if not match:
            return None
        tli, log, seg = (int(g, 16) for g in match.groups())
        return cls(tli, log * SEGMENTS_PER_XLOGID + seg)

    @property
    def name(self) -> str:
        """The segment's file name."""
        log, seg = divmod(self.number, SEGMENTS_PER_XLOGID)
        return f"{self.timeline:08X}{log:08X}{seg:08X}"

    def next(self) -> Segment:
        """The following segment on the same timeline."""
        return Segment(self.timeline, self.number + 1)


def parse_lsn(text: str) -> int:
    """An LSN's 64-bit position from its text form."""
    try:
        hi, lo = text.strip().split("/")
        return (int(hi, 16) << 32) | int(lo, 16)
    except ValueError:
        raise ValueError(f"bad LSN {text!r} (use e.g. 0/3000060)") from None


def format_lsn(value: int) -> str:
    """The text form of an LSN."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segment_of(lsn: int, timeline: int) -> Segment:
    """The segment holding an LSN on a timeline."""
    return Segment(timeline, lsn // SEGMENT_SIZE)


def is_history(name: str) -> bool:
    """Whether a WAL file name is a timeline history file."""
    return HISTORY_RE.match(name) is not None


def parse_history(text: str) -> list[tuple[int, int]]:
    """(parent timeline, switch LSN) rows of a timeline history file."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("#"):
            try:
                rows.append((int(parts[0]), parse_lsn(parts[1])))
            except ValueError:
                continue
    return rows
