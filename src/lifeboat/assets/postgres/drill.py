"""PostgreSQL's part of a drill: the source's WAL position when the outage is declared, and
the achieved RPO (the restore's end of replay against it; commits it lacks read with
pg_waldump from the source's pg_wal)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifeboat.assets.kind import RestoreCheck
from lifeboat.assets.rpo import Rpo, seconds_between, upper_bound
from lifeboat.errors import LifeboatError

if TYPE_CHECKING:
    from lifeboat.assets.kind import RestoreResult
    from lifeboat.repo import Repository

COMMIT = re.compile(r"desc: COMMIT(?:_PREPARED \d+:)? (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


@dataclass(frozen=True)
class PgPosition:
    """The source's WAL position when the outage was declared (None: unreachable)."""

    lsn: str | None
    timeline: int = 1
    error: str = ""


def lsn_value(text: str) -> int:
    """An LSN's 64-bit position, for comparisons."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def pg_source_position(dsn: str) -> PgPosition:
    """The source's WAL position and timeline when the outage is declared."""
    from lifeboat.assets.postgres.connection import connect

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
    """The achieved RPO of a restored cluster against the source's recorded position."""
    if at is not None:
        return Rpo(0.0, f"recovery target time {at.isoformat()} reached: every commit up to it was replayed")
    if not isinstance(source, PgPosition) or source.lsn is None:
        error = getattr(source, "error", "") or "no position recorded"
        why = f"the source's WAL position is unknown ({error})"
        return upper_bound(reference, recovered, why)
    end = restored_end_lsn(target)
    if end is None:
        return upper_bound(reference, recovered, "the restore's end of replay is unknown")
    if lsn_value(end) >= lsn_value(source.lsn):
        return Rpo(
            0.0, (f"replay reached {end}, at or past the source's WAL position {source.lsn}: nothing lost")
        )
    if pgdata is None or not (pgdata / "pg_wal").is_dir():
        return upper_bound(
            reference,
            recovered,
            f"WAL {end}..{source.lsn} is not in the restore and the source's pg_wal is not readable",
        )
    try:
        commits = lost_commits(pg_bin, user, pgdata, source, end)
    except (LifeboatError, OSError, subprocess.SubprocessError) as exc:
        detail = exc.message if isinstance(exc, LifeboatError) else str(exc)
        return upper_bound(reference, recovered, f"WAL {end}..{source.lsn} could not be read ({detail})")
    if not commits:
        return Rpo(
            0.0, f"replay ended at {end}; the source's WAL to {source.lsn} holds no commit: nothing lost"
        )
    oldest = min(commits)
    return Rpo(
        seconds_between(reference, oldest),
        f"{len(commits)} commit(s) in the source's WAL {end}..{source.lsn} are not in the restore "
        f"(oldest {oldest.isoformat(timespec='seconds')}): reference time minus the oldest",
    )


def archive_untouched(repo: Repository, asset: str, result: RestoreResult, before: set[str]) -> RestoreCheck:
    """A staging cluster must never write into production's WAL archive: its timeline
    would become a branch a later restore could follow. Provoke archiving (a segment
    switch) and compare the archive's names with those before the restore."""
    import psycopg

    from lifeboat.assets.postgres.connection import connect
    from lifeboat.assets.postgres.timelines import added_by_branch
    from lifeboat.assets.postgres.wal import namespace

    name = "archive untouched"
    if result.service is None:
        return RestoreCheck(name, False, "the restored cluster is not running")
    try:
        with connect(result.service.dsn) as conn:
            row = conn.execute("select timeline_id from pg_control_checkpoint()").fetchone()
            tli = int(row[0]) if row else 1
            mode = conn.execute("select current_setting('archive_mode')").fetchone()
            conn.execute("select pg_switch_wal()")
            conn.execute("checkpoint")
    except LifeboatError as exc:
        return RestoreCheck(name, False, exc.message)
    except psycopg.Error as exc:
        return RestoreCheck(name, False, str(exc).strip()[:200])
    added = added_by_branch(before, set(repo.list_ref_names(namespace(asset))), tli)
    archiving = mode is not None and mode[0] != "off"
    if added:
        detail = (
            f"the staging cluster (timeline {tli}) added {', '.join(added[:5])} to the WAL archive: "
            "restore drills with archiving off and remove these files from the asset"
        )
    elif archiving:
        detail = f"archive_mode is {mode[0] if mode else '?'} in the staging cluster: it could archive"
    else:
        detail = f"archiving off; the staging cluster (timeline {tli}) added nothing to the WAL archive"
    return RestoreCheck(name, not added and not archiving, detail)
