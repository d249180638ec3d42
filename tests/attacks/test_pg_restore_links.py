"""Adversary: whoever controls the database host (ransomware on the server, holding its
backup key) plants symbolic links in the data directory before a backup: a deep link to a
file elsewhere, and postgresql.auto.conf as a link to a file in production's own data
directory. A restore of that snapshot on a recovery host (as root) writes nothing through
them: the restored copy holds no link, production's files keep their bytes, and the
restore names what it left out."""

from __future__ import annotations

import os
import shutil

from lifeboat.assets.postgres.cluster import chown_tree, free_port
from tests.pgsandbox import PgSandbox


def test_links_planted_in_the_data_directory_are_never_written_through(pg: PgSandbox) -> None:
    pgdata, elsewhere = pg.root / "pgdata", pg.root / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim"
    victim.write_text("do not overwrite\n")
    pg.sql("insert into items (label) values ('base')")
    relation = "base/1/99999999"  # a file PostgreSQL does not know: lifeboat restores it all the same
    pg.cluster.stop("fast")
    (pgdata / "conf").mkdir()
    shutil.move(pgdata / "postgresql.auto.conf", pgdata / "conf" / "auto.conf")
    os.symlink(pgdata / "conf" / "auto.conf", pgdata / "postgresql.auto.conf")
    os.symlink(victim, pgdata / relation)
    chown_tree(pg.root, pg.user)
    production_conf = (pgdata / "conf" / "auto.conf").read_bytes()
    pg.cluster.start()
    pg.run("backup", "db")
    pg.cluster.stop("fast")  # production stopped: the restore below runs on the same host

    target, port = pg.root / "copy", free_port()
    result = pg.json("restore", "db", "--target", str(target), "--port", str(port), "--start", "--latest")
    try:
        assert result["ok"], result
        assert sorted(result["links_not_restored"]) == sorted(
            [f"postgresql.auto.conf -> {pgdata / 'conf' / 'auto.conf'}", f"{relation} -> {victim}"]
        )
        assert [p for p in target.rglob("*") if p.is_symlink()] == []
        dsn = pg.restored_dsn(target, port)
        assert pg.sql("select label from items", dsn) == [("base",)]
        assert pg.sql("show archive_mode", dsn) == [("off",)]  # written into the copy's own file
    finally:
        pg.stop_restored(target)
    assert (pgdata / "conf" / "auto.conf").read_bytes() == production_conf
    assert victim.read_text() == "do not overwrite\n"
