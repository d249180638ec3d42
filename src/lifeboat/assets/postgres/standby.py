"""Base backups read from a streaming standby (``backup_from = "standby"``).

Which server runs what, on PostgreSQL 15+:

* ``pg_backup_start`` and ``pg_backup_stop`` run **on the standby** (non-exclusive backups
  have been allowed during recovery since 9.6). The start is a restartpoint on the
  standby, so the primary does not checkpoint for the backup; the stop returns the
  standby's minimum recovery point as the stop LSN, and the ``backup_label`` says
  ``BACKUP FROM: standby``. A restore of it takes the end of the backup from the
  minRecoveryPoint in the *copied* ``global/pg_control``, which is why that file is read
  last (after every data file; pg_basebackup does the same).
* pgBackRest's ``backup-standby`` instead starts and stops the backup on the primary and
  copies from the standby; it dates from exclusive backups, which a standby could not run.
  It costs the primary a checkpoint per backup and needs a connection to the primary for
  the whole copy. We keep the primary out of it except for two short queries: its current
  LSN before the copy (the point the backup must include) and, after the stop, a WAL
  switch when the stop LSN is still in the primary's current segment: a standby with
  ``archive_mode = on`` archives nothing, so only the primary can close that segment.
* Before copying, the backup waits until the standby has replayed past the primary's LSN
  at the start (and past the backup's start LSN, which a restartpoint guarantees): a
  standby that lags or whose replay is paused would otherwise yield a backup older than
  the moment it was asked for, with nothing to say so.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from lifeboat.assets.postgres.connection import first_line
from lifeboat.assets.postgres.walnames import SEGMENT_SIZE, format_lsn, parse_lsn
from lifeboat.errors import LifeboatError

if TYPE_CHECKING:
    from lifeboat.assets.postgres.model import PostgresAsset

REPLAY_TIMEOUT = 600.0


class StandbyError(LifeboatError):
    """The standby cannot serve a base backup."""


def dsn_host(dsn: str | None) -> str:
    """The machine a dsn points at: its host, or this machine for a Unix socket / no host."""
    return dsn_remote_host(dsn) or socket.gethostname()


def dsn_remote_host(dsn: str | None) -> str | None:
    """The host a dsn names; None for this machine (a Unix socket, no host, unparsable)."""
    if not dsn:
        return None
    try:
        host = str(conninfo_to_dict(dsn).get("host") or "")
    except psycopg.ProgrammingError:
        return None
    first = host.split(",", 1)[0].strip()
    if not first or first.startswith("/") or first.startswith("@"):
        return None
    return first


@dataclass(frozen=True)
class Source:
    """Where a base backup reads from and where it runs pg_backup_start/stop."""

    backup_from: str  # "primary" | "standby"
    dsn: str  # the server that runs pg_backup_start/stop
    primary_dsn: str
    host: str

    @classmethod
    def of(cls, asset: PostgresAsset) -> Source:
        """Where the asset's base backups read from."""
        if asset.backup_from == "standby":
            # the policy refuses backup_from = "standby" without standby_dsn
            return cls("standby", asset.standby_dsn or "", asset.dsn, dsn_host(asset.standby_dsn))
        return cls("primary", asset.dsn, asset.dsn, dsn_host(asset.dsn))

    @property
    def standby(self) -> bool:
        """Whether base backups read a standby."""
        return self.backup_from == "standby"

    def labels(self) -> dict[str, str]:
        """Snapshot labels recording where the backup was read."""
        return {"backup_from": self.backup_from, "backup_host": self.host}


def _query(conn: psycopg.Connection[Any], sql: str, what: str) -> tuple[Any, ...]:
    try:
        row = conn.execute(sql).fetchone()
    except psycopg.Error as exc:
        raise StandbyError(f"{what}: {first_line(exc)}") from None
    assert row is not None
    return tuple(row)


def primary_position(primary_dsn: str, standby: psycopg.Connection[Any]) -> int:
    """The primary's current LSN, after checking that the standby replicates it."""
    from lifeboat.assets.postgres.connection import connect

    with connect(primary_dsn) as conn:
        in_recovery, sysid, lsn = _query(
            conn,
            "select pg_is_in_recovery(), (select system_identifier from pg_control_system()), "
            "case when pg_is_in_recovery() then null else pg_current_wal_lsn()::text end",
            "cannot read the primary's WAL position",
        )
    if in_recovery:
        raise StandbyError(
            "the asset's dsn is a server in recovery, not the primary",
            hint="dsn names the primary (it archives the WAL); standby_dsn names the standby to read",
        )
    (standby_sysid,) = _query(
        standby, "select system_identifier from pg_control_system()", "cannot read the standby"
    )
    if standby_sysid != sysid:
        raise StandbyError(
            f"standby_dsn is another cluster (system identifier {standby_sysid}, primary {sysid})",
            hint="point standby_dsn at a streaming standby of this asset's primary",
        )
    return parse_lsn(str(lsn))


def wait_replayed(conn: psycopg.Connection[Any], lsn: int, timeout: float = REPLAY_TIMEOUT) -> int:
    """Until the standby has replayed WAL up to ``lsn``; returns its replay LSN."""
    deadline = time.monotonic() + timeout
    while True:
        in_recovery, replayed = _query(
            conn,
            "select pg_is_in_recovery(), pg_last_wal_replay_lsn()::text",
            "cannot read the standby's replay position",
        )
        if not in_recovery:
            raise StandbyError(
                "standby_dsn is not a standby (it is not in recovery): was it promoted?",
                hint='point standby_dsn at a streaming standby, or set backup_from = "primary"',
            )
        position = parse_lsn(str(replayed)) if replayed else 0
        if position >= lsn:
            return position
        if time.monotonic() > deadline:
            raise StandbyError(
                f"the standby replayed WAL only up to {replayed or '0/0'}, not {format_lsn(lsn)}, "
                f"within {timeout:.0f} s",
                hint="check pg_stat_replication on the primary and that replay is not paused "
                "(pg_is_wal_replay_paused() on the standby)",
            )
        time.sleep(0.05)


def close_stop_segment(primary_dsn: str, stop_lsn: int) -> None:
    """Switch the primary to a new WAL segment while the backup's last one is still open,
    so it is archived now instead of whenever the primary fills it."""
    from lifeboat.assets.postgres.connection import connect

    last_needed = (stop_lsn - 1) // SEGMENT_SIZE
    with connect(primary_dsn) as conn:
        (current,) = _query(
            conn, "select pg_current_wal_lsn()::text", "cannot read the primary's WAL position"
        )
        if parse_lsn(str(current)) // SEGMENT_SIZE <= last_needed:
            _query(conn, "select pg_switch_wal()::text", "cannot switch the primary's WAL segment")
