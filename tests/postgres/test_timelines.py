"""Restores never harm production: archiving off in restored copies, exact quoting,
the archive's timeline tree (failover vs divergent branch), standby restores."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeboat.assets.postgres.cluster import free_port
from tests.pgsandbox import PgSandbox, destroy, make_sandbox


def labels(pg: PgSandbox, target: Path, port: int) -> list[str]:
    return sorted(r[0] for r in pg.sql("select label from items", pg.restored_dsn(target, port)))


def archived(pg: PgSandbox) -> list[str]:
    return sorted(p.name for p in (pg.root / "repo" / "refs" / "wal" / "db").iterdir())


def wait_archived(pg: PgSandbox, dsn: str, timeout: float = 60) -> str:
    """pg_switch_wal on the cluster at ``dsn`` and wait until its archiver shipped it."""
    segment = str(pg.sql("select pg_walfile_name(pg_current_wal_lsn())", dsn)[0][0])
    pg.sql("select pg_switch_wal()", dsn)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = pg.sql("select last_archived_wal from pg_stat_archiver", dsn)[0][0]
        if last and last >= segment:
            return segment
        time.sleep(0.1)
    raise AssertionError(f"{segment} not archived: {pg.sql('select * from pg_stat_archiver', dsn)}")


def test_staging_restore_never_writes_into_production_archive(pg: PgSandbox) -> None:
    pg.sql("insert into items (label) values ('prod-1')")
    pg.lb("backup", "db")
    pg.switch_and_wait_archived()
    stage, stage_port = pg.root / "stage", free_port()
    pg.lb("restore", "db", "--target", str(stage), "--latest", "--start", "--port", str(stage_port))
    try:
        dsn = pg.restored_dsn(stage, stage_port)
        # the backup carried production's archive_command: the staging copy must not use it
        assert "lifeboat" in (pg.root / "pgdata" / "postgresql.conf").read_text()
        assert pg.sql("show archive_mode", dsn)[0][0] == "off"
        assert pg.sql("show archive_command", dsn)[0][0] in ("", "(disabled)")
        pg.sql("insert into items (label) values ('staging')", dsn)
        pg.sql("select pg_switch_wal()", dsn)
        pg.sql("checkpoint", dsn)
        pg.sql("insert into items (label) values ('prod-2')")
        pg.switch_and_wait_archived()
        again, port = pg.root / "again", free_port()
        pg.lb("restore", "db", "--target", str(again), "--latest", "--start", "--port", str(port))
        try:
            assert labels(pg, again, port) == ["prod-1", "prod-2"]
        finally:
            pg.stop_restored(again)
    finally:
        pg.stop_restored(stage)
    assert not [n for n in archived(pg) if not n.startswith("00000001")], archived(pg)


@pytest.fixture
def weird() -> Iterator[PgSandbox]:
    sandbox = make_sandbox("re po 'q $(touch x)")
    yield sandbox
    destroy(sandbox)


def test_paths_with_space_quote_and_command_substitution(weird: PgSandbox) -> None:
    pg = weird
    pg.sql("insert into items (label) values ('before')")
    pg.lb("backup", "db")
    xid = str(pg.sql("insert into items (label) values ('A') returning xmin::text")[0][0])
    lsn = str(pg.sql("select pg_current_wal_lsn()::text")[0][0])
    pg.sql("insert into items (label) values ('B')")
    pg.switch_and_wait_archived()
    for case, args in {"lsn": ["--lsn", lsn], "xid": ["--xid", xid]}.items():
        target, port = pg.root / f"t {case} 'q $(touch x)", free_port()
        out = pg.lb_json("restore", "db", "--target", str(target), "--port", str(port), "--start", *args)
        try:
            assert out["ok"], out
            assert labels(pg, target, port) == ["A", "before"], case
        finally:
            pg.stop_restored(target)
    places = [Path.cwd(), pg.root, pg.root.parent, pg.root / "pgdata", Path("/")]
    places += [p for p in pg.root.iterdir() if p.is_dir()]
    assert not [p for p in places if (p / "x").exists()]
    assert not list(pg.root.parent.rglob("x"))


def test_malformed_recovery_targets_are_one_line_errors(pg: PgSandbox) -> None:
    pg.sql("insert into items (label) values ('base')")
    pg.lb("backup", "db")
    for args, word in [
        (["--xid", "12'; select 1"], "--xid"),
        (["--lsn", "0/1' recovery_target_action='shutdown"], "--lsn"),
        (["--lsn", "nothex"], "--lsn"),
    ]:
        proc = pg.lb("restore", "db", "--target", str(pg.root / "bad"), *args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert word in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
        assert not (pg.root / "bad").exists()
    # a restore point name is any string, written escaped
    name = "it's \\ odd"
    pg.sql(f"select pg_create_restore_point('{name.replace(chr(39), chr(39) * 2)}')")
    pg.sql("insert into items (label) values ('after point')")
    pg.switch_and_wait_archived()
    target, port = pg.root / "named", free_port()
    pg.lb("restore", "db", "--target", str(target), "--port", str(port), "--start", "--name", name)
    try:
        assert labels(pg, target, port) == ["base"]
    finally:
        pg.stop_restored(target)


def test_pg_configure_quotes_archive_command(weird: PgSandbox) -> None:
    out = weird.lb_json("pg", "configure", "db")
    command = out["settings"]["archive_command"]
    assert f"'{weird.policy}'" not in command  # the quote inside the path is escaped
    weird.lb("pg", "configure", "db", "--apply")
    weird.sql("insert into items (label) values ('configured')")
    segment = weird.switch_and_wait_archived()
    assert segment in archived(weird)
    assert not os.path.exists(weird.root / "pgdata" / "x")
