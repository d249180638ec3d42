"""A recovery target the archived WAL cannot reach (#16 item 5): refused before anything is
written when the archive shows it (an --lsn past the last archived segment, an --at after
the newest segment was stored); otherwise PostgreSQL's "recovery ended before configured
recovery target was reached" becomes one line naming where replay ended."""

from __future__ import annotations

import time
from datetime import datetime

from tests.pgsandbox import PgSandbox


def wait_until_past(pg: PgSandbox, moment: datetime) -> None:
    deadline = time.monotonic() + 30
    query = f"select clock_timestamp() > '{moment.isoformat()}'::timestamptz"
    while pg.sql(query)[0][0] is not True:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_targets_beyond_the_archive_are_refused_with_its_end(pg):
    pg.run("backup", "db")
    pg.sql("insert into items (label) values ('archived')")
    last = pg.switch_and_wait_archived()
    pg.sql("insert into items (label) values ('not archived')")  # WAL the archive lacks
    unarchived_lsn = pg.sql("select pg_current_wal_insert_lsn()::text")[0][0]
    target = pg.root / "restored"

    lsn = pg.run("restore", "db", "--target", str(target), "--lsn", unarchived_lsn, "--start", check=False)
    assert lsn.returncode == 2, lsn.stderr
    first = lsn.stderr.splitlines()[0]
    assert first.startswith(f"lifeboat: error: recovery target LSN {unarchived_lsn} is beyond the end")
    assert f"segment {last}" in first
    assert not target.exists()

    moment = pg.sql("select clock_timestamp()")[0][0]
    wait_until_past(pg, moment)
    at = pg.run("restore", "db", "--target", str(target), "--at", moment.isoformat(), "--start", check=False)
    assert at.returncode == 2, at.stderr
    assert "is after the newest archived WAL: the archive ends at LSN" in at.stderr
    assert "recovery ended before" not in at.stderr and not target.exists()


def test_a_time_after_the_last_commit_but_before_the_last_push_is_one_line(pg):
    pg.run("backup", "db")
    pg.sql("insert into items (label) values ('last commit')")
    after_commit = pg.sql("select clock_timestamp()")[0][0]
    wait_until_past(pg, after_commit)
    pg.switch_and_wait_archived()  # stored after the target: the archive cannot tell up front
    target = pg.root / "restored"
    proc = pg.run(
        "restore", "db", "--target", str(target), "--at", after_commit.isoformat(), "--start", check=False
    )
    try:
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines[0].startswith("lifeboat: error: recovery target time ")
        assert "is beyond the end of the archived WAL (last replayed transaction at " in lines[0]
        assert "WAL replayed to LSN" in lines[0]
        assert len(lines) <= 2 and "FATAL" not in proc.stderr
    finally:
        if (target / "postmaster.pid").exists():
            pg.stop_restored(target)
