"""Aligned plain-text columns for listings that grow with the repository's history.

rich's Table measures, wraps and pads every cell: `snapshots` took 4.3 s to print 10,000
snapshots (a year of hourly backups), 0.4 s of it listing them. A listing only needs each
column padded to its widest value, which is one pass over the rows."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rich.cells import cell_len

GAP = "  "


def aligned(header: Sequence[str], rows: Sequence[Sequence[str]], right: Collection[int] = ()) -> list[str]:
    """The header and each row as one line, every column as wide as its widest value
    (display cells, so wide characters line up); columns in ``right`` (numbers) are
    right-aligned. Trailing spaces are dropped."""
    widths = [_cells(h) for h in header]
    for row in rows:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], _cells(value))
    return [_line(header, widths, right)] + [_line(row, widths, right) for row in rows]


def _line(values: Sequence[str], widths: Sequence[int], right: Collection[int]) -> str:
    cells = []
    for i, value in enumerate(values):
        pad = " " * (widths[i] - _cells(value))
        cells.append(pad + value if i in right else value + pad)
    return GAP.join(cells).rstrip()


def _cells(value: str) -> int:
    return len(value) if value.isascii() else cell_len(value)
