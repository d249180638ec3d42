"""Point-in-time restores of a real cluster from a real repository."""

from __future__ import annotations

import json
import time

from lifeboat.assets.postgres.cluster import free_port
from tests.harness.wait import wait_until


def labels(pg, target, port):
    return sorted(r[0] for r in pg.sql("select label from items", pg.restored_dsn(target, port)))


def test_restore_to_time_lsn_restore_point_and_latest(pg):
    pg.sql("insert into items (label) values ('base')")
    pg.run("backup", "db")
    pg.sql("insert into items (label) values ('A')")
    lsn_after_a = pg.sql("select pg_current_wal_lsn()::text")[0][0]
    pg.sql("select pg_create_restore_point('before-b')")
    # the server's own clock, read after A committed and before B: no margin to sleep out
    noted = pg.sql("select clock_timestamp()")[0][0]
    pg.sql("insert into items (label) values ('B')")
    pg.switch_and_wait_archived()
    cases = {
        "time": ["--at", noted.isoformat()],
        "lsn": ["--lsn", lsn_after_a],
        "name": ["--name", "before-b"],
        "latest": ["--latest"],
    }
    for case, args in cases.items():
        target = pg.root / f"restored-{case}"
        port = free_port()
        out = pg.json("restore", "db", "--target", str(target), "--port", str(port), "--start", *args)
        try:
            assert out["ok"], out
            expected = ["A", "B", "base"] if case == "latest" else ["A", "base"]
            assert labels(pg, target, port) == expected, case
            assert {c["name"] for c in out["checks"] if c["ok"]} >= {"pg_amcheck", "items exist"}
            assert set(out["steps"]) >= {"fetch_base", "fetch_wal", "replay", "checks", "total"}
        finally:
            pg.stop_restored(target)
    # the source cluster was never touched
    assert sorted(r[0] for r in pg.sql("select label from items")) == ["A", "B", "base"]


def test_target_before_oldest_backup_and_non_empty_target_are_clear_errors(pg):
    before = pg.sql("select clock_timestamp()")[0][0]  # the backup starts after this
    pg.run("backup", "db")
    proc = pg.run("restore", "db", "--target", str(pg.root / "t"), "--at", before.isoformat(), check=False)
    assert proc.returncode == 2 and "before the oldest base backup" in proc.stderr
    busy = pg.root / "busy"
    busy.mkdir()
    (busy / "file").write_text("x")
    proc = pg.run("restore", "db", "--target", str(busy), check=False)
    assert proc.returncode == 2 and "not empty" in proc.stderr and "Traceback" not in proc.stderr
    # --force replaces a stopped data directory, never a directory of unrelated files
    proc = pg.run("restore", "db", "--target", str(busy), "--force", check=False)
    assert proc.returncode == 2 and "not a PostgreSQL data directory" in proc.stderr
    assert (busy / "file").read_text() == "x"
    again = pg.root / "again"
    pg.run("restore", "db", "--target", str(again))
    (again / "stale-from-before").write_text("replaced")
    pg.run("restore", "db", "--target", str(again), "--force")
    assert (again / "PG_VERSION").is_file() and not (again / "stale-from-before").exists()


def test_wal_push_is_idempotent_and_refuses_different_content(pg):
    pg.switch_and_wait_archived()
    segment = sorted((pg.root / "pgdata" / "pg_wal").glob("0000000100000000000000*"))[0]
    pg.run("wal", "push", "--asset", "db", str(segment))  # already archived by PostgreSQL: succeeds again
    fake = pg.root / segment.name
    fake.write_bytes(b"\0" * segment.stat().st_size)
    proc = pg.run("wal", "push", "--asset", "db", str(fake), check=False)
    assert proc.returncode == 1 and "different content" in proc.stderr


def test_missing_segment_is_named_by_verify_and_restore(pg):
    from lifeboat.assets.postgres.cluster import chown_tree

    pg.run("backup", "db")
    pg.sql("insert into items (label) values ('x')")
    first = pg.switch_and_wait_archived()
    pg.sql("insert into items (label) values ('y')")
    pg.switch_and_wait_archived()
    pg.sql("insert into items (label) values ('z')")
    pg.switch_and_wait_archived()
    assert pg.json("wal", "verify")["ok"]
    victim = pg.root / "repo" / "refs" / "wal" / "db" / first
    victim.unlink()
    proc = pg.run("wal", "verify", check=False)
    assert proc.returncode == 1 and first in proc.stdout
    proc = pg.run("restore", "db", "--target", str(pg.root / "r"), "--latest", check=False)
    assert proc.returncode == 2 and first in proc.stderr and "Traceback" not in proc.stderr
    # refused before --force removes a stopped data directory in the way: it stays as it was
    stopped = pg.root / "stopped"
    stopped.mkdir()
    (stopped / "PG_VERSION").write_text("15\n")
    (stopped / "marker").write_text("still here")
    chown_tree(stopped, pg.user)
    proc = pg.run("restore", "db", "--target", str(stopped), "--latest", "--force", check=False)
    assert proc.returncode == 2 and first in proc.stderr
    assert sorted(p.name for p in stopped.iterdir()) == ["PG_VERSION", "marker"]


def test_status_measures_exposure_from_where_a_wal_gap_stops_replay(pg):
    pg.run("backup", "db")
    pg.sql("insert into items (label) values ('x')")
    reached = pg.switch_and_wait_archived()  # the last segment a restore could replay
    start = time.time()  # what comes after it reaches the archive a second later at least
    wait_until(lambda: int(time.time()) > int(start), "the next second", timeout=5, interval=0.01)
    pg.sql("insert into items (label) values ('y')")
    missing = pg.switch_and_wait_archived()
    pg.sql("insert into items (label) values ('z')")
    pg.switch_and_wait_archived(timeout=50)  # the segment past the gap: stored before now
    pg.clock.freeze(time.time())  # so the gap is under 50 s old, inside the 60 s grace

    def db_status() -> dict:
        out = json.loads(pg.run("status", "--json", check=False).stdout)
        return next(a for a in out["assets"] if a["asset"] == "db")

    whole = db_status()
    assert not [b for b in whole["breaches"] if "WAL gap" in b]
    (pg.root / "repo" / "refs" / "wal" / "db" / missing).unlink()
    fresh = db_status()  # a gap this young may be an async drain's segment in flight
    assert not [b for b in fresh["breaches"] if "WAL gap" in b]
    assert fresh["last_backup"] < whole["last_backup"]  # WAL past the gap restores nothing
    pg.clock.advance(hours=1)
    later = db_status()
    gap = [b for b in later["breaches"] if "WAL gap" in b]
    assert len(gap) == 1 and missing in gap[0] and f"replay stops at {reached}" in gap[0]
    assert later["last_backup"] == fresh["last_backup"] and later["last_backup"] in gap[0]


def test_status_does_not_credit_a_base_backup_whose_own_wal_is_missing(pg):
    """A segment between a base backup's start and stop gone from the archive: that base
    cannot be made consistent, so status credits the one before it (exposure from where its
    replay stops) and names the base; with no base left whole, no restorable backup."""
    pg.run("backup", "db")
    pg.sql("insert into items (label) values ('x')")
    pg.switch_and_wait_archived()
    pg.run("backup", "db")
    pg.sql("insert into items (label) values ('y')")
    pg.switch_and_wait_archived()  # WAL past the newer base: its replay would reach it
    older, newer = sorted(pg.json("snapshots", "--asset", "db"), key=lambda s: s["time"])

    def db_status() -> dict:
        out = json.loads(pg.run("status", "--json", check=False).stdout)
        return next(a for a in out["assets"] if a["asset"] == "db")

    whole = db_status()
    assert whole["last_backup"] >= newer["time"][:19] and not [b for b in whole["breaches"] if "WAL" in b]
    own = newer["labels"]["start_wal"]
    (pg.root / "repo" / "refs" / "wal" / "db" / own).unlink()
    pg.clock.advance(hours=1)  # past the grace a segment in flight gets
    broken = db_status()
    named = f"base backup {newer['id'][:12]} ("
    assert [b for b in broken["breaches"] if b.startswith(named) and f"segment {own} of its own WAL" in b]
    assert older["time"][:19] <= broken["last_backup"] < newer["time"][:19]  # the older base's replay
    assert [b for b in broken["breaches"] if f"WAL gap: segment {own} is missing" in b]

    (pg.root / "repo" / "refs" / "wal" / "db" / older["labels"]["start_wal"]).unlink()
    none = db_status()
    assert none["last_backup"] is None and none["exposure_s"] is None
    assert "no restorable backup" in none["breaches"]
    assert len([b for b in none["breaches"] if b.startswith("base backup ")]) == 2


def test_archived_wal_without_a_base_backup_is_never_backed_up_in_status(pg):
    pg.switch_and_wait_archived()  # archiving works, but nothing to replay it onto
    out = json.loads(pg.run("status", "--json", check=False).stdout)
    db = next(a for a in out["assets"] if a["asset"] == "db")
    assert db["last_backup"] is None and "never backed up" in db["breaches"]


def test_second_base_backup_stores_only_changed_pages(pg):
    # An update-heavy table tuned as such tables are (fillfactor 50), so updated rows stay
    # on their page (HOT); with fillfactor 100 PostgreSQL scatters new versions through
    # the free-space map and 2% of rows touch half the pages: no backup tool can help that.
    pg.sql("alter table items set (fillfactor = 50)")
    pg.sql("insert into items (label) select repeat(md5(g::text), 8) from generate_series(1, 200000) g")
    pg.sql("vacuum freeze items")  # steady state: hint bits and visibility map already set
    pg.sql("checkpoint")
    first = pg.json("backup", "db")[0]["stats"]
    pg.sql("update items set label = upper(label) where id <= 4000")  # ~2% of rows, a contiguous range
    pg.sql("checkpoint")
    second = pg.json("backup", "db")[0]["stats"]
    assert first["stored_bytes"] > 5_000_000
    assert second["stored_bytes"] < first["stored_bytes"] * 0.15, (first, second)
    assert second["new_bytes"] < first["new_bytes"] * 0.1, (first, second)


def test_restore_of_a_restored_cluster_on_timeline_two(pg):
    pg.sql("insert into items (label) values ('t1')")
    pg.run("backup", "db")
    pg.sql("insert into items (label) values ('t1-late')")
    before_switch = pg.sql("select pg_current_wal_lsn()::text")[0][0]
    pg.switch_and_wait_archived()
    # promote a restored copy as the new primary: it becomes timeline 2 and, with --archive,
    # archives into the same repository (the old primary is stopped: a failover)
    pg.cluster.stop()
    target = pg.root / "tl2"
    port = free_port()
    pg.run("restore", "db", "--target", str(target), "--port", str(port), "--start", "--latest", "--archive")
    dsn2 = pg.restored_dsn(target, port)
    assert pg.sql("select timeline_id from pg_control_checkpoint()", dsn2)[0][0] >= 1
    pg.sql("insert into items (label) values ('t2-before')", dsn2)
    before_tl2 = pg.sql("select pg_current_wal_lsn()::text", dsn2)[0][0]
    pg.sql("insert into items (label) values ('t2-after')", dsn2)
    segment = pg.sql("select pg_walfile_name(pg_current_wal_lsn())", dsn2)[0][0]
    pg.sql("select pg_switch_wal()", dsn2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        last = pg.sql("select last_archived_wal from pg_stat_archiver", dsn2)[0][0]
        if last and last >= segment:
            break
        time.sleep(0.1)
    pg.stop_restored(target)
    assert segment.startswith("00000002")
    again = pg.root / "tl2-again"
    port2 = free_port()
    pg.run("restore", "db", "--target", str(again), "--port", str(port2), "--start", "--lsn", before_tl2)
    try:
        assert labels(pg, again, port2) == ["t1", "t1-late", "t2-before"]
    finally:
        pg.stop_restored(again)
    older = pg.root / "tl1-again"  # a point on timeline 1, before the switch
    port3 = free_port()
    pg.run("restore", "db", "--target", str(older), "--port", str(port3), "--start", "--lsn", before_switch)
    try:
        assert labels(pg, older, port3) == ["t1", "t1-late"]
    finally:
        pg.stop_restored(older)


def test_pgbench_during_base_backup_restores_consistent(pg):
    import subprocess

    pgbench = [
        str(pg.cluster.pg_bin / "pgbench"),
        "-h",
        str(pg.cluster.socket_dir),
        "-p",
        str(pg.cluster.port),
    ]
    run_as = ["runuser", "-u", pg.user, "--"] if pg.user else []
    pg.sql("insert into items (label) values ('present')")  # the policy's SQL check wants a row
    subprocess.run([*run_as, *pgbench, "-i", "-s", "4", "-q", "postgres"], check=True, capture_output=True)
    # The load runs from before the backup starts until after it ended, then its clients
    # are disconnected (their open transactions roll back): no fixed duration to sit out.
    load = subprocess.Popen(
        [*run_as, *pgbench, "-c", "4", "-T", "600", "-n", "postgres"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    clients = "select pid from pg_stat_activity where application_name = 'pgbench'"
    try:
        wait_until(lambda: len(pg.sql(clients)) == 4, "pgbench's clients to connect")
        pg.run("backup", "db")
        assert load.poll() is None and len(pg.sql(clients)) == 4, "the load ended before the backup"
    finally:
        pg.sql(f"select pg_terminate_backend(pid) from ({clients}) c")
        load.wait(timeout=60)
    expected = pg.sql("select sum(abalance), count(*) from pgbench_accounts")[0]
    history = pg.sql("select count(*) from pgbench_history")[0][0]
    pg.switch_and_wait_archived()
    target = pg.root / "after-load"
    port = free_port()
    out = pg.json("restore", "db", "--target", str(target), "--port", str(port), "--start", "--latest")
    try:
        amcheck = next(c for c in out["checks"] if c["name"] == "pg_amcheck")
        assert amcheck["ok"], amcheck
        dsn = pg.restored_dsn(target, port)
        assert pg.sql("select sum(abalance), count(*) from pgbench_accounts", dsn)[0] == expected
        assert pg.sql("select count(*) from pgbench_history", dsn)[0][0] == history
    finally:
        pg.stop_restored(target)


def test_killed_wal_push_loses_nothing(pg):
    import os
    import signal

    pg.run("backup", "db")
    # PostgreSQL archives nothing for now: the next segment stays in pg_wal, not yet archived
    original = pg.sql("show archive_command")[0][0]
    set_archive_command(pg, "")
    pg.sql("insert into items (label) select 'row ' || g from generate_series(1, 50000) g")
    segment_name = pg.sql("select pg_walfile_name(pg_current_wal_lsn())")[0][0]
    pg.sql("select pg_switch_wal()")
    segment = pg.root / "pgdata" / "pg_wal" / segment_name
    locks = pg.root / "repo" / "locks"
    before = set(locks.iterdir()) if locks.exists() else set()
    # The archiver's push of that segment, killed mid-upload: stopped at the event that the
    # upload is under way (it holds a repository lock only while storing a new segment),
    # checked to be unfinished, then killed.
    push = pg.popen("wal", "push", "--asset", "db", str(segment))
    pid = pg.lifeboat_pid(push)
    wait_until(
        lambda: push.poll() is not None or (locks.exists() and set(locks.iterdir()) - before),
        "the push to take its repository lock",
        interval=0.001,
    )
    os.kill(pid, signal.SIGSTOP)
    assert push.poll() is None, "the push ended before it was caught mid-upload"
    assert pg.json("wal", "verify")["last"] < segment_name  # not stored yet
    os.kill(pid, signal.SIGKILL)
    if pid != push.pid:  # runuser stopped itself with its child: let it see the child die
        os.kill(push.pid, signal.SIGCONT)
    assert push.wait(timeout=60) != 0
    # PostgreSQL's archiver retries the same segment: the retry must succeed
    set_archive_command(pg, None, reset_to=original)
    pg.switch_and_wait_archived()
    assert pg.json("wal", "verify")["ok"]
    assert pg.run("check", "--read-data").returncode == 0
    target = pg.root / "after-kill"
    port = free_port()
    pg.run("restore", "db", "--target", str(target), "--port", str(port), "--start", "--latest")
    try:
        assert pg.sql("select count(*) from items", pg.restored_dsn(target, port))[0][0] == 50000
    finally:
        pg.stop_restored(target)


def set_archive_command(pg, command: str | None, *, reset_to: str = "") -> None:  # type: ignore[no-untyped-def]
    """Set archive_command (None: reset to the sandbox's own, ``reset_to``); wait until in effect."""
    if command is None:
        pg.sql("alter system reset archive_command")
    else:
        pg.sql(f"alter system set archive_command = '{command}'")
    pg.sql("select pg_reload_conf()")
    wanted = reset_to if command is None else command
    wait_until(lambda: pg.sql("show archive_command")[0][0] == wanted, "archive_command to be reloaded")


def test_async_archiving_keeps_up_and_drains(pg):
    import sys

    archive = f"{sys.executable} -m lifeboat --config {pg.policy} wal push --async --asset db %p"
    pg.sql(f"alter system set archive_command = '{archive}'")
    pg.sql("select pg_reload_conf()")
    pg.run("backup", "db")
    segments = []
    for i in range(3):
        pg.sql(f"insert into items (label) values ('async {i}')")
        segments.append(pg.switch_and_wait_archived())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        report = pg.json("wal", "verify")
        if report["ok"] and report["last"] and report["last"] >= segments[-1]:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"spool not drained: {report}")
    assert not [
        p for p in (pg.root / ".lifeboat" / "wal-spool" / "db").iterdir() if not p.name.startswith(".")
    ]


def test_policy_check_reads_the_running_servers_settings(pg):
    out = pg.json("policy", "check")
    warnings = [f["message"] for f in out["findings"] if f["asset"] == "db"]
    assert any("archive_timeout 0s cannot meet the RPO" in w for w in warnings), warnings
    pg.run("pg", "configure", "db", "--apply")
    out = pg.json("policy", "check")
    assert not [f for f in out["findings"] if f["asset"] == "db" and "archive" in f["message"]]


def test_remote_server_backup_streams_pg_basebackup(pg):
    remote = pg.root / "remote.toml"
    remote.write_text(
        "\n".join(line for line in pg.policy.read_text().splitlines() if not line.startswith("pgdata"))
    )
    import shutil

    if pg.user:
        shutil.chown(remote, pg.user)
    pg.sql("insert into items (label) values ('streamed')")
    out = json.loads(pg.run("--config", str(remote), "backup", "db", "--json").stdout)[0]
    assert out["labels"]["method"] == "pg_basebackup" and out["stats"]["files"] > 500
    pg.sql("insert into items (label) values ('after')")
    pg.switch_and_wait_archived()
    target = pg.root / "from-stream"
    port = free_port()
    pg.run(
        "--config",
        str(remote),
        "restore",
        "db",
        "--target",
        str(target),
        "--port",
        str(port),
        "--start",
        "--latest",
    )
    try:
        assert labels(pg, target, port) == ["after", "streamed"]
    finally:
        pg.stop_restored(target)


def test_forget_expires_wal_older_than_the_oldest_kept_base_backup(pg):
    pg.sql("insert into items (label) values ('first')")
    pg.run("backup", "db")
    old_segments = [pg.switch_and_wait_archived() for _ in range(3)]
    pg.sql("insert into items (label) values ('second')")
    second = pg.json("backup", "db")[0]
    pg.sql("insert into items (label) values ('after')")
    pg.switch_and_wait_archived()
    pg.policy.write_text(
        pg.policy.read_text().replace("retention = { last = 10 }", "retention = { last = 1 }")
    )
    out = pg.json("forget")
    assert len(out["removed"]) == 1 and out["kept"] == [second["snapshot"]]
    names = pg.json("wal", "verify")
    assert names["ok"] and names["first"] > old_segments[-1]  # the old WAL is gone, no gap
    audit = (pg.root / ".lifeboat" / "audit.jsonl").read_text()
    assert '"wal_removed": ' in audit and '"wal_removed": 0' not in audit
    target, port = pg.root / "after-forget", free_port()
    result = pg.json("restore", "db", "--target", str(target), "--port", str(port), "--start", "--latest")
    try:
        assert result["ok"] and labels(pg, target, port) == ["after", "first", "second"]
    finally:
        pg.stop_restored(target)


def test_tablespace_is_restored_inside_the_target_never_pointing_at_the_source(pg):
    import os

    from lifeboat.assets.postgres.cluster import chown_tree

    pg.sql("insert into items (label) values ('base')")  # the policy's SQL check wants a row
    location = pg.root / "tblspc"
    location.mkdir()
    chown_tree(location, pg.user)
    pg.sql(f"create tablespace extra location '{location}'")
    pg.sql("create table far (v text) tablespace extra")
    pg.sql("insert into far values ('in the tablespace')")
    pg.run("backup", "db")
    pg.sql("insert into far values ('after the backup')")
    pg.switch_and_wait_archived()
    before = sorted(p.name for p in location.rglob("*"))
    target, port = pg.root / "with-tablespace", free_port()
    result = pg.json("restore", "db", "--target", str(target), "--port", str(port), "--start", "--latest")
    try:
        assert result["ok"], result
        rows = pg.sql("select v from far order by v", pg.restored_dsn(target, port))
        assert [r[0] for r in rows] == ["after the backup", "in the tablespace"]
        (entry,) = list((target / "pg_tblspc").iterdir())
        assert not entry.is_symlink() and str(location) not in os.path.realpath(entry)
    finally:
        pg.stop_restored(target)
    assert sorted(p.name for p in location.rglob("*")) == before  # the source was not touched


def test_a_restored_copy_never_writes_through_the_sources_links_nor_reaches_its_primary(pg):
    """A data directory whose pg_wal lives elsewhere (initdb --waldir) and whose
    postgresql.conf is a link: the backup holds what they point at, the restored copy holds
    no link, so its WAL, its configuration changes and its new timeline stay in its own
    directory. Settings that would reach production (a primary_conninfo the copy would
    stream from in standby mode, a recovery_end_command) are cleared."""
    import os
    import shutil

    from lifeboat.assets.postgres.cluster import chown_tree

    pgdata, outside = pg.root / "pgdata", pg.root / "outside"
    pg.cluster.stop("fast")
    outside.mkdir()
    shutil.move(pgdata / "pg_wal", outside / "pg_wal")
    os.symlink(outside / "pg_wal", pgdata / "pg_wal")
    shutil.move(pgdata / "postgresql.conf", outside / "postgresql.conf")
    os.symlink(outside / "postgresql.conf", pgdata / "postgresql.conf")
    os.symlink(outside / "gone.conf", pgdata / "dangling.conf")  # a link to nothing stays one
    chown_tree(pg.root, pg.user)
    pg.cluster.start()
    marker = pg.root / "recovery-end-ran"
    pg.sql(f"alter system set recovery_end_command = 'touch {marker}'")
    pg.sql(f"alter system set primary_conninfo = 'host={pg.cluster.socket_dir} port={pg.cluster.port}'")
    pg.sql("select pg_reload_conf()")
    pg.sql("insert into items (label) values ('base')")
    pg.run("backup", "db")
    pg.sql("insert into items (label) values ('after the backup')")
    pg.switch_and_wait_archived()
    config = (outside / "postgresql.conf").read_bytes()
    target, port = pg.root / "copy", free_port()
    result = pg.json("restore", "db", "--target", str(target), "--port", str(port), "--start", "--latest")
    try:
        assert result["ok"], result
        assert labels(pg, target, port) == ["after the backup", "base"]
        links = [p for p in target.rglob("*") if p.is_symlink()]
        assert links == [] and (target / "pg_wal").is_dir() and (target / "postgresql.conf").is_file()
        assert result["links_not_restored"] == [f"dangling.conf -> {outside / 'gone.conf'}"]
        dsn = pg.restored_dsn(target, port)
        assert pg.sql("select timeline_id from pg_control_checkpoint()", dsn)[0][0] >= 2
        assert pg.sql("show primary_conninfo", dsn) == [("",)]
        assert pg.sql("show max_logical_replication_workers", dsn) == [("0",)]  # no subscriber applies
        assert result["inherited_settings_cleared"] == ["primary_conninfo", "recovery_end_command"]
    finally:
        pg.stop_restored(target)
    assert (outside / "postgresql.conf").read_bytes() == config  # archiving still on in production
    assert not [p.name for p in (outside / "pg_wal").iterdir() if p.name.startswith("00000002")]
    assert not marker.exists()
    assert pg.sql("select count(*) from pg_stat_replication") == [(0,)]


def test_a_configuration_linked_inside_the_data_directory_is_named_when_the_copy_cannot_start(pg):
    """postgresql.conf as a link into the data directory itself: a backup keeps the link
    (followed, the walk would take that directory twice), the restore leaves it out, and the
    copy that cannot start without it fails in one line naming the link and what to do."""
    import os
    import shutil

    pgdata = pg.root / "pgdata"
    pg.cluster.stop("fast")
    (pgdata / "conf").mkdir()
    shutil.move(pgdata / "postgresql.conf", pgdata / "conf" / "postgresql.conf")
    os.symlink(pgdata / "conf" / "postgresql.conf", pgdata / "postgresql.conf")
    from lifeboat.assets.postgres.cluster import chown_tree

    chown_tree(pgdata, pg.user)
    pg.cluster.start()
    pg.sql("insert into items (label) values ('base')")
    pg.run("backup", "db")
    target, port = pg.root / "copy", free_port()
    proc = pg.run(
        "restore", "db", "--target", str(target), "--port", str(port), "--start", "--latest", check=False
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"postgresql.conf -> {pgdata / 'conf' / 'postgresql.conf'}" in proc.stderr
    assert "restore again without --start" in proc.stderr
    assert not (target / "postgresql.conf").exists() and (target / "conf" / "postgresql.conf").is_file()
    assert not (target / "postmaster.pid").exists()


def test_restore_to_a_transaction_id(pg):
    pg.sql("insert into items (label) values ('base')")
    pg.run("backup", "db")
    xid = pg.sql("insert into items (label) values ('A') returning xmin::text")[0][0]
    pg.sql("insert into items (label) values ('B')")
    pg.switch_and_wait_archived()
    target, port = pg.root / "to-xid", free_port()
    result = pg.json("restore", "db", "--target", str(target), "--port", str(port), "--start", "--xid", xid)
    try:
        assert result["ok"] and result["recovery_target"] == f"xid {xid}"
        assert labels(pg, target, port) == ["A", "base"]  # the target transaction included, B not
    finally:
        pg.stop_restored(target)
