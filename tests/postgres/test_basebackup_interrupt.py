"""A streamed base backup (no local PGDATA: pg_basebackup) stopped mid-stream ends at once:
pg_basebackup is stopped with it instead of blocking on a pipe nobody reads, and nothing is
committed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from lifeboat.repo.locks import list_locks
from lifeboat.storage import open_storage
from tests.harness.wait import wait_until
from tests.pgsandbox import PgSandbox


def _children_named(parent: int, name: str) -> list[int]:
    """Pids of ``parent``'s children whose command is ``name`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv0 = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and os.path.basename(argv0) == name.encode():
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _resumed_exit_code(proc: subprocess.Popen[bytes]) -> tuple[int] | None:
    """(exit code,) once the process has ended. runuser (between the test and lifeboat when
    the tests run as root) stops itself when it sees its child stopped, and only resumes on a
    SIGCONT of its own: it would never reap lifeboat otherwise."""
    code = proc.poll()
    if code is None:
        os.kill(proc.pid, signal.SIGCONT)
        return None
    return (code,)


def test_a_streamed_base_backup_interrupted_mid_stream_stops_pg_basebackup(pg: PgSandbox):
    # ~100 MB of rows: pg_basebackup is certainly still writing when lifeboat is stopped
    pg.sql("create table bulk as select g, repeat(md5(g::text), 32) as pad from generate_series(1, 100000) g")
    remote = pg.root / "remote.toml"
    remote.write_text(
        "\n".join(line for line in pg.policy.read_text().splitlines() if not line.startswith("pgdata"))
    )
    if pg.user:
        shutil.chown(remote, pg.user)
    proc = pg.popen("--config", str(remote), "backup", "db")
    try:
        lifeboat = pg.lifeboat_pid(proc)
        [basebackup] = wait_until(
            lambda: _children_named(lifeboat, "pg_basebackup") or None,
            "lifeboat to start pg_basebackup",
            timeout=60,
            interval=0.001,
        )
        os.kill(lifeboat, signal.SIGSTOP)  # nothing reads the tar now: pg_basebackup fills the pipe
        assert _alive(basebackup), "pg_basebackup finished before the interruption (make the data larger)"
        # SIGTERM (a deadline, systemd, the daemon): SIGINT would be ignored whenever the
        # test run itself was started in the background by a script, as POSIX shells do
        os.kill(lifeboat, signal.SIGTERM)
        os.kill(lifeboat, signal.SIGCONT)
        # before the fix lifeboat waited for pg_basebackup, which waited for a reader: forever
        [code] = wait_until(lambda: _resumed_exit_code(proc), "lifeboat to exit", timeout=120)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130, stderr
    assert "Traceback" not in stderr
    wait_until(lambda: not _alive(basebackup), "pg_basebackup to be gone", timeout=30)
    assert pg.json("--config", str(remote), "snapshots") == []  # nothing half-committed
    # PostgreSQL's archiver may be pushing WAL (its own short locks) meanwhile: only the
    # interrupted process's locks count
    left = [lock for lock in list_locks(open_storage(f"file://{pg.root / 'repo'}")) if lock.pid == lifeboat]
    assert left == [], "the interrupted backup left its lock"
