"""Waiting for a restored cluster to accept writes, and fast promotion of a restore that
replays to the end of the archive (`--latest --start`).

Archive recovery that runs out of WAL ends with an immediate end-of-recovery checkpoint:
every buffer replay dirtied is written and the relation files it touched are fsynced
before the server accepts a single write. A standby promoted by ``pg_ctl promote`` instead
writes an end-of-recovery WAL record, accepts writes at once and leaves that checkpoint to
the checkpointer in the background; crash safety is the WAL's, as on any promoted standby.

So a restore to the latest point that lifeboat starts itself replays in standby mode and
asks for promotion once the stager has staged every planned file. PostgreSQL looks at a
promotion request only when reading the next WAL record failed, and first replays
everything the archive and pg_wal hold ("any WAL immediately available in the archive or
in pg_wal will be restored"): with every file staged, that is all of it, exactly where
archive recovery would have ended. A stager that fails never reaches the request: its
restore_command is fatal and the server stops instead of promoting.

While replay runs nothing connects to the server: a query on a hot standby holds a
snapshot, and replay of every pruning record that conflicts with it waits (backing off up
to a second) for the query to end. The postmaster's pid file says when it accepts writes
("ready"); one query then confirms it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from lifeboat.assets.postgres.cluster import PgCluster
from lifeboat.errors import RestoreError

READY = "ready"  # postmaster.pid's status line once the server runs (not in recovery)


def wait_writable(
    cluster: PgCluster, staged: Callable[[], bool] | None = None, timeout: float = 3600
) -> None:
    """Wait until the cluster accepts writes. With ``staged`` it replays in standby mode:
    once ``staged()`` (every WAL file is in the spool) ask it to promote. Raises when the
    server stopped instead."""
    requested = staged is None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not requested and staged is not None and staged():
            proc = cluster.run("pg_ctl", "-D", str(cluster.datadir), "promote", "-W", check=False)
            # refused only when the server is not in recovery: it stopped (seen below) or
            # has not yet begun it (asked again on the next pass)
            requested = proc.returncode == 0
        status = _postmaster_status(cluster)
        if status == READY and requested:
            cluster.wait_promoted(timeout=max(1.0, deadline - time.monotonic()))
            return
        if status is None and not cluster.is_running():
            tail = cluster.log_path.read_text(errors="replace").strip().splitlines()[-4:]
            raise RestoreError(f"PostgreSQL stopped during recovery: {' | '.join(tail)}")
        time.sleep(0.05)
    raise RestoreError(f"recovery did not finish within {timeout:.0f}s")


def _postmaster_status(cluster: PgCluster) -> str | None:
    """The status line of a live postmaster's pid file (None: no live postmaster, or the
    file is being rewritten)."""
    try:
        lines = (cluster.datadir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # runs as another user
    return lines[7].strip() if len(lines) >= 8 else ""
