"""Achieved RPO: what the restore lacks compared with the source at the reference time.

RPO = reference time minus the time of the oldest change the source had at the reference
time that the restore does not hold; 0 when nothing was lost, however long ago the last
change was. The source's position is recorded before anything is restored ("the outage is
declared"); when the source cannot be reached, the figure is an upper bound (the
reference time minus the newest data the restore holds) and the method says so.

- postgres: the restore's end of replayed WAL (the switch point in the new timeline's
  history file) against the source's WAL position; WAL the restore lacks is read with
  pg_waldump from the source's pg_wal for commit records. A drill to a past time that
  reached its recovery target has replayed every commit up to it.
- objects: the version of each key at the reference time against the snapshot's.
- keys: each key file's fingerprint against the snapshot's.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lifeboat.errors import LifeboatError

COMMIT = re.compile(r"desc: COMMIT(?:_PREPARED \d+:)? (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


@dataclass(frozen=True)
class Rpo:
    rpo_s: float | None
    method: str


@dataclass(frozen=True)
class PgPosition:
    """The source's WAL position when the outage was declared (None: unreachable)."""

    lsn: str | None
    timeline: int = 1
    error: str = ""


def lsn_value(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def _seconds(later: datetime, earlier: datetime) -> float:
    return round(max((later - earlier).total_seconds(), 0.0), 3)


def _upper_bound(reference: datetime, recovered: datetime | None, why: str) -> Rpo:
    if recovered is None:
        return Rpo(None, f"{why}; the restore holds no timestamped change to measure from")
    return Rpo(
        _seconds(reference, recovered),
        f"upper bound: {why}; reference time minus the newest change the restore holds",
    )


# -- postgres ------------------------------------------------------------------------------


def pg_source_position(dsn: str) -> PgPosition:
    from lifeboat.assets.postgres.backup import connect

    try:
        with connect(dsn) as conn:
            row = conn.execute(
                "select case when pg_is_in_recovery() then pg_last_wal_replay_lsn()"
                " else pg_current_wal_lsn() end::text, (pg_control_checkpoint()).timeline_id"
            ).fetchone()
    except LifeboatError as exc:
        return PgPosition(None, error=exc.message)
    except Exception as exc:  # psycopg errors after connecting: the source is not usable
        lines = str(exc).strip().splitlines()
        return PgPosition(None, error=lines[0] if lines else "query failed")
    assert row is not None
    return PgPosition(str(row[0]), int(row[1]))


def restored_end_lsn(target: Path) -> str | None:
    """Where replay ended: the switch point the promotion wrote into the newest timeline's
    history file (pg_last_wal_replay_lsn() is NULL once promoted)."""
    histories = sorted((target / "pg_wal").glob("*.history"), key=lambda p: int(p.stem, 16))
    if not histories:
        return None
    lines = [ln for ln in histories[-1].read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        return None
    parts = lines[-1].split()
    return parts[1] if len(parts) > 1 else None


def lost_commits(pg_bin: Path, user: str | None, pgdata: Path, pos: PgPosition, start: str) -> list[datetime]:
    """Commit times of the transactions in the source's WAL from ``start`` to its position."""
    cmd = [
        str(pg_bin / "pg_waldump"),
        "-p",
        str(pgdata / "pg_wal"),
        "-t",
        str(pos.timeline),
        "-s",
        start,
        "-e",
        str(pos.lsn),
        "-r",
        "Transaction",
    ]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    # TZ=UTC: pg_waldump prints commit times in its local zone, by abbreviation only
    env = {**os.environ, "TZ": "UTC"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    times = [datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC) for m in COMMIT.finditer(proc.stdout)]
    if proc.returncode != 0 and not times:
        # scanning forward from where replay ended: any commit found is the oldest lost one,
        # but finding none in WAL that could not be read proves nothing
        lines = proc.stderr.strip().splitlines()
        raise LifeboatError(f"pg_waldump: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return times


def pg_rpo(
    *,
    reference: datetime,
    at: datetime | None,
    source: Any,
    target: Path,
    recovered: datetime | None,
    pgdata: Path | None,
    pg_bin: Path,
    user: str | None,
) -> Rpo:
    if at is not None:
        return Rpo(0.0, f"recovery target time {at.isoformat()} reached: every commit up to it was replayed")
    if not isinstance(source, PgPosition) or source.lsn is None:
        error = getattr(source, "error", "") or "no position recorded"
        why = f"the source's WAL position is unknown ({error})"
        return _upper_bound(reference, recovered, why)
    end = restored_end_lsn(target)
    if end is None:
        return _upper_bound(reference, recovered, "the restore's end of replay is unknown")
    if lsn_value(end) >= lsn_value(source.lsn):
        return Rpo(
            0.0, (f"replay reached {end}, at or past the source's WAL position {source.lsn}: nothing lost")
        )
    if pgdata is None or not (pgdata / "pg_wal").is_dir():
        return _upper_bound(
            reference,
            recovered,
            f"WAL {end}..{source.lsn} is not in the restore and the source's pg_wal is not readable",
        )
    try:
        commits = lost_commits(pg_bin, user, pgdata, source, end)
    except (LifeboatError, OSError, subprocess.SubprocessError) as exc:
        detail = exc.message if isinstance(exc, LifeboatError) else str(exc)
        return _upper_bound(reference, recovered, f"WAL {end}..{source.lsn} could not be read ({detail})")
    if not commits:
        return Rpo(
            0.0, f"replay ended at {end}; the source's WAL to {source.lsn} holds no commit: nothing lost"
        )
    oldest = min(commits)
    return Rpo(
        _seconds(reference, oldest),
        f"{len(commits)} commit(s) in the source's WAL {end}..{source.lsn} are not in the restore "
        f"(oldest {oldest.isoformat(timespec='seconds')}): reference time minus the oldest",
    )


# -- objects and keys ------------------------------------------------------------------------


def state_at(versions: list[Any], when: datetime) -> dict[str, Any]:
    """Each key's newest version at ``when``, deleted keys left out."""
    state: dict[str, Any] = {}
    for obj in sorted(versions, key=lambda o: o.last_modified):
        if obj.last_modified <= when:
            state[obj.key] = obj
    return {k: o for k, o in state.items() if not o.is_delete_marker}


def objects_rpo(
    reference: datetime,
    source_state: Any,
    entries: list[Any],
    recovered: datetime | None,
) -> Rpo:
    """``source_state``: key -> ObjectInfo at the reference time (or Unavailable)."""
    if not isinstance(source_state, dict):
        return _upper_bound(reference, recovered, getattr(source_state, "error", "no source state"))
    held = {e.path: e.meta for e in entries if e.type == "file"}
    missing = []
    for key, obj in source_state.items():
        meta = held.get(key)
        same = meta is not None and (
            (obj.version_id and meta.get("version_id") == obj.version_id) or meta.get("etag") == obj.etag
        )
        if not same:
            missing.append(obj.last_modified)
    if not missing:
        return Rpo(
            0.0, f"all {len(source_state)} object versions on the source are in the restore: nothing lost"
        )
    oldest = min(missing)
    return Rpo(
        _seconds(reference, oldest),
        f"{len(missing)} of {len(source_state)} object versions the source had are not in the restore "
        f"(oldest change {oldest.isoformat(timespec='seconds')}): reference time minus the oldest",
    )


def files_rpo(
    reference: datetime,
    source: Any,
    entries: list[Any],
    recovered: datetime | None,
) -> Rpo:
    """``source``: snapshot path -> (size, mtime_ns) of each regular file on the source
    (or Unavailable)."""
    if not isinstance(source, dict):
        return _upper_bound(reference, recovered, getattr(source, "error", "no source state"))
    held = {e.path: (e.size, e.mtime_ns) for e in entries if e.type == "file"}
    changed = [mtime for name, (size, mtime) in source.items() if held.get(name) != (size, mtime)]
    if not changed:
        return Rpo(0.0, f"all {len(source)} files on the source are in the restore unchanged: nothing lost")
    oldest = datetime.fromtimestamp(min(changed) / 1e9, UTC)
    return Rpo(
        _seconds(reference, oldest),
        f"{len(changed)} of {len(source)} files on the source are missing or differ in the restore "
        f"(oldest change {oldest.isoformat(timespec='seconds')}): reference time minus the oldest",
    )


# -- what the source had when the outage was declared ----------------------------------------


@dataclass(frozen=True)
class Unavailable:
    error: str


def capture_source(asset: Any, at: datetime | None) -> Any:
    """The source's state at the reference time, read before anything is restored:
    a PgPosition, {key: ObjectInfo}, {path: (size, mtime_ns)}, or Unavailable."""
    from lifeboat.assets.files import walk
    from lifeboat.assets.objects.source import open_source

    try:
        if asset.kind == "postgres":
            return pg_source_position(asset.dsn) if at is None else None
        if asset.kind == "objects":
            source = open_source(asset.source, asset.endpoint_url, asset.region, asset.workers)
            if at is None:
                return {o.key: o for o in source.list_current()}
            if source.versioning() != "Enabled":
                return Unavailable("the source keeps no versions, so its state at a past time is not known")
            return state_at(source.list_versions(), at)
        if at is not None:
            return Unavailable("a file's state at a past time is not known")
        return {
            i.name: (i.st.st_size, i.st.st_mtime_ns)
            for i in walk([Path(p) for p in asset.paths], asset.exclude)
            if stat.S_ISREG(i.st.st_mode)
        }
    except LifeboatError as exc:
        return Unavailable(f"the source could not be read: {exc.message}")
    except OSError as exc:
        return Unavailable(f"the source could not be read: {exc.strerror}")
