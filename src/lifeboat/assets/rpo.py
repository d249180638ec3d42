"""Achieved RPO: what the restore lacks compared with the source at the reference time.

RPO = reference time minus the time of the oldest change the source had at the reference
time that the restore does not hold; 0 when nothing was lost, however long ago the last
change was. The source's position is recorded before anything is restored ("the outage is
declared"); when the source cannot be reached, the figure is an upper bound (the
reference time minus the newest data the restore holds) and the method says so.

Each kind measures its own (its plug-in's `drill` hook); this module holds what they share.

- postgres: the restore's end of replayed WAL (the switch point in the new timeline's
  history file) against the source's WAL position; WAL the restore lacks is read with
  pg_waldump from the source's pg_wal for commit records. A drill to a past time that
  reached its recovery target has replayed every commit up to it.
  (assets/postgres/drill.py)
- objects: the version of each key at the reference time against the snapshot's
  (assets/objects/drill.py).
- files, keys: each file's size and mtime against the snapshot's (`files_rpo`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lifeboat.repo import Entry


@dataclass(frozen=True)
class Rpo:
    """An achieved RPO in seconds (None: unknown) and how it was measured."""

    rpo_s: float | None
    method: str


def seconds_between(later: datetime, earlier: datetime) -> float:
    """Seconds from `earlier` to `later` (never negative)."""
    return round(max((later - earlier).total_seconds(), 0.0), 3)


def upper_bound(reference: datetime, recovered: datetime | None, why: str) -> Rpo:
    """An RPO upper bound: the reference time minus the newest data the restore holds."""
    if recovered is None:
        return Rpo(None, f"{why}; the restore holds no timestamped change to measure from")
    return Rpo(
        seconds_between(reference, recovered),
        f"upper bound: {why}; reference time minus the newest change the restore holds",
    )


# -- file trees (files, keys) ------------------------------------------------------------------


def files_rpo(
    reference: datetime,
    source: object,
    entries: list[Entry],
    recovered: datetime | None,
) -> Rpo:
    """``source``: snapshot path -> (size, mtime_ns) of each regular file on the source
    (or Unavailable)."""
    if not isinstance(source, dict):
        return upper_bound(reference, recovered, getattr(source, "error", "no source state"))
    held = {e.path: (e.size, e.mtime_ns) for e in entries if e.type == "file"}
    changed = [mtime for name, (size, mtime) in source.items() if held.get(name) != (size, mtime)]
    if not changed:
        return Rpo(0.0, f"all {len(source)} files on the source are in the restore unchanged: nothing lost")
    oldest = datetime.fromtimestamp(min(changed) / 1e9, UTC)
    return Rpo(
        seconds_between(reference, oldest),
        f"{len(changed)} of {len(source)} files on the source are missing or differ in the restore "
        f"(oldest change {oldest.isoformat(timespec='seconds')}): reference time minus the oldest",
    )


# -- what the source had when the outage was declared ----------------------------------------


@dataclass(frozen=True)
class Unavailable:
    """The source's state could not be read; `error` says why."""

    error: str
