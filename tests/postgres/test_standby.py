"""Base backups read from a streaming standby: the primary only archives WAL."""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
from collections import defaultdict
from pathlib import Path

import pytest

from lifeboat.assets.postgres.cluster import PgCluster, chown_tree, free_port
from lifeboat.assets.postgres.quoting import setting
from lifeboat.assets.postgres.walnames import parse_lsn
from lifeboat.assets.registry import load_policy
from lifeboat.errors import ConfigError
from tests.pgsandbox import PgSandbox

# `strace -y` shows each descriptor's path: read(5</path/to/file>, ...) = 131072
READ_CALL = re.compile(r"^\d+\s+(?:read|pread64|readv|preadv|preadv2)\(\d+<([^>]*)>.*\)\s+=\s+(\d+)")
OPEN_CALL = re.compile(r'^\d+\s+openat\([^,]*, "([^"]*)"')


def make_standby(pg: PgSandbox) -> PgCluster:
    """A streaming standby of the sandbox's primary, made as operators do (pg_basebackup -R)."""
    standby = PgCluster(pg.root / "standby", free_port(), pg.root / "standby-sock")
    standby.socket_dir.mkdir()
    chown_tree(standby.socket_dir, pg.user)
    primary = pg.cluster
    standby.run(
        "pg_basebackup",
        "-h",
        str(primary.socket_dir),
        "-p",
        str(primary.port),
        "-D",
        str(standby.datadir),
        "-R",
        "-X",
        "stream",
        "-c",
        "fast",
    )
    # postgresql.conf came from the primary: its own port and socket (archive_mode = on
    # archives nothing on a standby: only the primary archives)
    sock = '"' + str(standby.socket_dir) + '"'
    standby.configure(f"port = {standby.port}", setting("unix_socket_directories", sock))
    standby.start()
    standby.wait_accepting()
    return standby


def use_standby(pg: PgSandbox, standby: PgCluster, standby_dsn: str | None = None) -> None:
    """The policy names the primary by dsn only: lifeboat is never told where its PGDATA is."""
    pg.builder.remove("assets", "db", keys=["pgdata"]).table(
        "assets",
        "db",
        backup_from="standby",
        standby_dsn=standby_dsn or standby.dsn,
        standby_pgdata=str(standby.datadir),
    )
    pg.write_policy()


def traced_backup(pg: PgSandbox, trace: Path) -> tuple[dict, dict[str, int], list[str]]:
    """`lifeboat backup db` under strace: its snapshot, bytes read per directory, files opened."""
    calls = "openat,read,pread64,readv,preadv,preadv2"
    strace = ["strace", "-f", "-qq", "-y", "-s", "0", "-e", f"trace={calls}", "-o", str(trace)]
    proc = pg.shell([*strace, *pg.command("backup", "db", "--json")], timeout=600)
    read: dict[str, int] = defaultdict(int)
    opened: list[str] = []
    for line in trace.read_text(errors="replace").splitlines():
        if match := READ_CALL.match(line):
            read[match.group(1)] += int(match.group(2))
        elif match := OPEN_CALL.match(line):
            opened.append(match.group(1))
    return json.loads(proc.stdout)[0], read, opened


def under(paths: dict[str, int] | list[str], root: Path) -> int:
    prefix = str(root) + "/"
    if isinstance(paths, dict):
        return sum(n for p, n in paths.items() if p.startswith(prefix))
    return sum(1 for p in paths if p.startswith(prefix))


def server_io(pg: PgSandbox, dsn: str) -> tuple[int, int]:
    """Blocks the server read into its buffers, and checkpoints (restartpoints) it was asked for."""
    row = pg.sql(
        "select (select sum(blks_read) from pg_stat_database), "
        "(select checkpoints_req from pg_stat_bgwriter)",
        dsn,
    )[0]
    return int(row[0]), int(row[1])


def items(pg: PgSandbox, dsn: str) -> list[str]:
    return sorted(r[0] for r in pg.sql("select label from items", dsn))


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace measures what the backup reads")
def test_backup_from_standby_restores_to_a_point_and_never_reads_the_primary(pg):
    pg.sql("create table bulk as select g, repeat(md5(g::text), 4) as pad from generate_series(1, 200000) g")
    pg.sql("insert into items (label) values ('base')")
    standby = make_standby(pg)
    from_primary_policy = pg.policy.read_text()
    use_standby(pg, standby)
    primary_before = server_io(pg, pg.cluster.dsn)

    snap, read, opened = traced_backup(pg, pg.root / "backup.strace")

    primary_after = server_io(pg, pg.cluster.dsn)
    from_primary = under(read, pg.cluster.datadir)
    from_standby = under(read, standby.datadir)
    bulk_bytes = pg.sql("select pg_relation_size('bulk')")[0][0]
    print(
        f"\nbytes read by the backup process: standby data directory {from_standby:,}, "
        f"primary data directory {from_primary:,} ({under(opened, pg.cluster.datadir)} files opened); "
        f"bulk table {bulk_bytes:,} bytes\n"
        f"primary server during the backup: blks_read +{primary_after[0] - primary_before[0]} "
        f"(8 KiB blocks), checkpoints requested +{primary_after[1] - primary_before[1]}"
    )
    assert from_primary == 0 and under(opened, pg.cluster.datadir) == 0
    assert from_standby >= bulk_bytes  # the data really came from the standby's files
    assert primary_after[1] == primary_before[1]  # the primary did not checkpoint for the backup
    # a few catalog blocks for the two queries lifeboat sends the primary, not the table
    assert primary_after[0] - primary_before[0] < bulk_bytes // 8192 // 10
    labels = snap["labels"]
    assert labels["backup_from"] == "standby" and labels["backup_host"] == socket.gethostname()

    pg.sql("insert into items (label) values ('A')")
    pg.sql("select pg_create_restore_point('after-a')")
    pg.sql("insert into items (label) values ('B')")
    pg.switch_and_wait_archived()
    for case, args, expected in (
        ("name", ["--name", "after-a"], ["A", "base"]),
        ("latest", ["--latest"], ["A", "B", "base"]),
    ):
        target = pg.root / f"restored-{case}"
        port = free_port()
        out = pg.json("restore", "db", "--target", str(target), "--port", str(port), "--start", *args)
        try:
            assert out["ok"] and out["snapshot"] == snap["snapshot"], out
            assert items(pg, pg.restored_dsn(target, port)) == expected, case
            assert pg.sql("select count(*) from bulk", pg.restored_dsn(target, port))[0][0] == 200000
        finally:
            pg.stop_restored(target)

    # Control: the same measurement of a backup from the primary sees the primary read
    pg.policy.write_text(from_primary_policy)
    before = server_io(pg, pg.cluster.dsn)
    _, read, _ = traced_backup(pg, pg.root / "primary.strace")
    after = server_io(pg, pg.cluster.dsn)
    print(
        f"control, backup_from = primary: primary data directory {under(read, pg.cluster.datadir):,} "
        f"bytes, standby {under(read, standby.datadir):,}; checkpoints requested +{after[1] - before[1]}"
    )
    assert under(read, pg.cluster.datadir) >= bulk_bytes and under(read, standby.datadir) == 0
    assert after[1] > before[1]


def test_backup_waits_for_the_standby_to_replay_what_the_primary_had(pg):
    pg.sql("insert into items (label) values ('base')")
    standby = make_standby(pg)
    use_standby(pg, standby)
    pg.sql("select pg_wal_replay_pause()", standby.dsn)
    pg.sql("insert into items (label) values ('late')")
    primary_lsn = parse_lsn(pg.sql("select pg_current_wal_lsn()::text")[0][0])
    backup = pg.popen("backup", "db", "--json", text=True)
    try:
        deadline = time.monotonic() + 60
        waiting = []
        while not waiting and time.monotonic() < deadline and backup.poll() is None:
            waiting = pg.sql(
                "select 1 from pg_stat_activity where application_name = 'lifeboat' "
                "and query like '%pg_last_wal_replay_lsn%'",
                standby.dsn,
            )
        assert waiting, "the backup never waited on the standby's replay"
        assert backup.poll() is None  # replay is paused: it cannot have finished
        pg.sql("select pg_wal_replay_resume()", standby.dsn)
        out, err = backup.communicate(timeout=300)
    finally:
        if backup.poll() is None:
            backup.kill()
    assert backup.returncode == 0, out + err
    labels = json.loads(out)[0]["labels"]
    assert parse_lsn(labels["stop_lsn"]) >= primary_lsn
    assert labels["backup_from"] == "standby"
    target = pg.root / "restored"
    port = free_port()
    pg.run(
        "restore", "db", "--target", str(target), "--port", str(port), "--start", "--lsn", labels["stop_lsn"]
    )
    try:
        assert items(pg, pg.restored_dsn(target, port)) == ["base", "late"]
    finally:
        pg.stop_restored(target)


def test_standby_dsn_that_is_not_a_standby_is_a_one_line_error(pg):
    standby = PgCluster(pg.root / "nope", 0, pg.root / "sock")
    use_standby(pg, standby, standby_dsn=pg.cluster.dsn)  # the primary itself
    proc = pg.run("backup", "db", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "standby_dsn is not a standby" in proc.stderr and "Traceback" not in proc.stderr


def test_backup_from_standby_without_standby_dsn_is_refused(tmp_path):
    policy = tmp_path / "lifeboat.toml"
    policy.write_text(
        '[repository]\nurl = "repo"\nkeyfile = "k"\n[classes.c]\nrpo = "1h"\nrto = "1h"\n'
        '[assets.db]\nkind = "postgres"\nclass = "c"\ndsn = "host=db1"\nbackup_from = "standby"\n'
    )
    with pytest.raises(ConfigError, match="needs standby_dsn"):
        load_policy(policy)


def test_backup_streamed_from_a_standby_without_local_pgdata(pg):
    pg.sql("insert into items (label) values ('base')")
    standby = make_standby(pg)
    use_standby(pg, standby)
    pg.policy.write_text(re.sub(r"(?m)^standby_pgdata = .*\n", "", pg.policy.read_text()))
    snap = pg.json("backup", "db")[0]
    labels = snap["labels"]
    assert labels["method"] == "pg_basebackup" and labels["backup_from"] == "standby"
    pg.sql("insert into items (label) values ('after')")
    pg.switch_and_wait_archived()
    target = pg.root / "restored"
    port = free_port()
    out = pg.json("restore", "db", "--target", str(target), "--port", str(port), "--start", "--latest")
    try:
        assert out["snapshot"] == snap["snapshot"]
        assert items(pg, pg.restored_dsn(target, port)) == ["after", "base"]
    finally:
        pg.stop_restored(target)
