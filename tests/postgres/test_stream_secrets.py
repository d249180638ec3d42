"""`wal stream` keeps the DSN's password off pg_receivewal's command line (ps, /proc) and
keeps its spool directory private."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

from tests.cli.test_local_hygiene import assert_private
from tests.harness.wait import wait_until
from tests.postgres.test_stream import ACTIVE_SLOT

CANARY = "canary-pw-5d0c1e"


def receivewal_pids(root: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"pg_receivewal") and any(str(root).encode() in a for a in argv):
            pids.append(int(entry.name))
    return pids


def test_pg_receivewal_gets_no_password_on_its_command_line(pg) -> None:  # type: ignore[no-untyped-def]
    text = pg.policy.read_text()
    assert 'dsn = "host=' in text
    pg.policy.write_text(text.replace('dbname=postgres"', f'dbname=postgres password={CANARY}"'))
    streamer = pg.popen(
        "wal", "stream", "--asset", "db", "--flush-every", "0.3", "--max-seconds", "120", text=True
    )
    try:
        wait_until(lambda: pg.sql(ACTIVE_SLOT), "the stream's replication slot to be active")
        wait_until(lambda: receivewal_pids(pg.root), "pg_receivewal to run")
        (pid,) = receivewal_pids(pg.root)
        lifeboat_pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True)
        assert b"--slot" in argv and "pg_receivewal" in ps.stdout
        assert CANARY.encode() not in argv and CANARY not in ps.stdout
        # the password did reach it, through its environment (readable by its owner only)
        assert f"PGPASSWORD={CANARY}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        stream_dir = pg.root / ".lifeboat" / "wal-stream" / "db"
        wait_until(lambda: any(stream_dir.iterdir()), "pg_receivewal to write a file")
        assert_private(stream_dir.parent)
    finally:
        if "lifeboat_pid" in locals():
            os.kill(lifeboat_pid, signal.SIGTERM)  # runuser would not pass a SIGTERM on
        else:
            streamer.kill()
        _, err = streamer.communicate(timeout=60)
    assert CANARY not in err
    state = pg.root / ".lifeboat"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert_private(state)
