"""Aligned plain-text columns for listings that grow with the repository's history.

rich's Table measures, wraps and pads every cell: `snapshots` took 4.3 s to print 10,000
snapshots (a year of hourly backups), 0.4 s of it listing them. A listing only needs each
column padded to its widest value, which is one pass over the rows."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rich.cells import cell_len

from lifeboat.escaped_text import shown

GAP = "  "


def aligned(header: Sequence[str], rows: Sequence[Sequence[str]], right: Collection[int] = ()) -> list[str]:
    """The header and each row as one line, every column as wide as its widest value
    (display cells, so wide characters line up); columns in ``right`` (numbers) are
    right-aligned. Trailing spaces are dropped. Column by column, so that the padding of
    10,000 rows runs in str's own methods."""
    columns = [_padded(column, i in right) for i, column in enumerate(zip(header, *rows, strict=True))]
    return [GAP.join(cells).rstrip() for cells in zip(*columns, strict=True)]


def _padded(values: Sequence[str], right: bool) -> list[str]:
    # a value a terminal would act on (a host named with an escape sequence by whoever held
    # a writer key) is escaped before it is measured; the test inline: 80,000 cells a listing
    values = [v if v.isprintable() and "\\" not in v else shown(v) for v in values]
    if all(map(str.isascii, values)):  # one cell a character: str pads by itself
        width = max(map(len, values))
        return [v.rjust(width) for v in values] if right else [v.ljust(width) for v in values]
    cells = [cell_len(v) for v in values]
    width = max(cells)
    pads = [" " * (width - n) for n in cells]
    return (
        [p + v for p, v in zip(pads, values, strict=True)]
        if right
        else [v + p for p, v in zip(pads, values, strict=True)]
    )
