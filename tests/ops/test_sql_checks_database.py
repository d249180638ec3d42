"""SQL checks run in the database the asset's dsn names (not in `postgres`) by default."""

from __future__ import annotations

from psycopg.conninfo import make_conninfo

from lifeboat.assets.postgres.cluster import free_port


def test_checks_run_in_the_dsn_database_unless_one_is_named(pg):
    pg.sql("create database app")
    app_dsn = make_conninfo(pg.cluster.dsn, dbname="app")
    pg.sql("create table orders (id int); insert into orders values (1), (2)", app_dsn)
    pg.builder.table(
        "assets",
        "db",
        dsn=app_dsn,
        checks=[
            {"name": "orders", "sql": "select count(*) from orders", "expect": "2"},
            {"name": "items", "sql": "select count(*) > 0 from items", "expect": "t", "database": "postgres"},
        ],
    )
    pg.write_policy()
    assert "dbname=app" in pg.policy.read_text()
    pg.sql("insert into items (label) values ('x')")
    pg.run("backup", "db")
    target, port = pg.root / "restored", free_port()
    out = pg.json("restore", "db", "--target", str(target), "--port", str(port), "--start", "--latest")
    try:
        checks = {c["name"]: c for c in out["checks"]}
        assert checks["orders"]["ok"], checks["orders"]  # in `app`: the dsn's database
        assert checks["items"]["ok"], checks["items"]  # `database` still picks another one
    finally:
        pg.stop_restored(target)
