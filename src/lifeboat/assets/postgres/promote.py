"""Fast promotion of a restore replaying to the end of the archive (`--latest --start`).

Archive recovery that runs out of WAL ends with an immediate end-of-recovery checkpoint:
every buffer replay dirtied is written and every relation file it touched is fsynced
before the server accepts a single write (seconds to minutes after a large replay, on a
data directory just written). A standby promoted by ``pg_ctl promote`` instead writes an
end-of-recovery WAL record, accepts writes at once and leaves that checkpoint to the
checkpointer in the background; crash safety is the WAL's, as on any promoted standby.

So a restore to the latest point that lifeboat starts itself replays in standby mode and
asks for promotion once the stager has staged every planned file. PostgreSQL looks at a
promotion request only when reading the next WAL record failed, and first replays
everything the archive and pg_wal hold ("any WAL immediately available in the archive or
in pg_wal will be restored"): with every file staged, that is all of it, exactly where
archive recovery would have ended. A stager that fails never reaches the request: its
restore_command is fatal and the server stops instead of promoting.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from lifeboat.assets.postgres.cluster import PgCluster
from lifeboat.errors import RestoreError


def promote_when_staged(cluster: PgCluster, staged: Callable[[], bool], timeout: float = 3600) -> None:
    """Wait until ``staged()`` (every WAL file is in the spool), ask the standby-mode
    cluster to promote, and wait until it accepts writes; raises when it stopped instead."""
    import psycopg

    requested = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not requested and staged():
            proc = cluster.run("pg_ctl", "-D", str(cluster.datadir), "promote", "-W", check=False)
            # refused only when the server is not in recovery: it stopped (seen below) or
            # has not yet begun it (asked again on the next pass)
            requested = proc.returncode == 0
        if requested:
            try:
                with psycopg.connect(cluster.dsn, autocommit=True, connect_timeout=5) as conn:
                    row = conn.execute("select pg_is_in_recovery()").fetchone()
                    if row is not None and not row[0]:
                        return
            except psycopg.OperationalError:
                pass
        if not _postmaster_alive(cluster):
            tail = cluster.log_path.read_text(errors="replace").strip().splitlines()[-4:]
            raise RestoreError(f"PostgreSQL stopped during recovery: {' | '.join(tail)}")
        time.sleep(0.05 if requested else 0.1)
    raise RestoreError(f"recovery did not finish within {timeout:.0f}s")


def _postmaster_alive(cluster: PgCluster) -> bool:
    """Whether the cluster's postmaster runs, without a process start per look (pg_ctl
    status is one): its pid file names it and a signal 0 probes it."""
    import os

    try:
        pid = int((cluster.datadir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return cluster.is_running()  # between writes of the pid file: ask pg_ctl
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # runs as another user
    return True
