"""A restored data directory holds no symbolic link: a snapshot taken before backups followed
the data directory's links, or one crafted by whoever could write the repository, may hold
links to the source host's WAL directory or configuration; the restore and the restored
server would write through them."""

from __future__ import annotations

import os
from pathlib import Path

from lifeboat.assets.postgres.restore import disable_archiving, replace_links


def test_links_in_a_restored_data_directory_are_replaced_and_named(tmp_path: Path) -> None:
    outside, target = tmp_path / "production", tmp_path / "restored"
    (outside / "pg_wal").mkdir(parents=True)
    (outside / "pg_wal" / "000000010000000000000001").write_bytes(b"production's WAL")
    conf = outside / "postgresql.conf"
    conf.write_text("archive_mode = on\narchive_command = 'push %p'\n")
    (target / "base" / "1").mkdir(parents=True)
    os.symlink(outside / "pg_wal", target / "pg_wal")
    os.symlink(conf, target / "postgresql.conf")
    os.symlink(outside / "passwd", target / "base" / "1" / "16384")

    dropped = replace_links(target)

    assert sorted(dropped) == [f"base/1/16384 -> {outside / 'passwd'}", f"postgresql.conf -> {conf}"]
    assert (target / "pg_wal").is_dir() and not (target / "pg_wal").is_symlink()
    assert list((target / "pg_wal").iterdir()) == []  # a new cluster's WAL goes here, not to production's
    assert [p for p in target.rglob("*") if p.is_symlink()] == []
    assert disable_archiving(target) == []  # nothing left to edit through
    assert conf.read_text() == "archive_mode = on\narchive_command = 'push %p'\n"
    assert [p.name for p in (outside / "pg_wal").iterdir()] == ["000000010000000000000001"]
    assert not (outside / "passwd").exists()


def test_a_backup_follows_only_readable_links_out_of_the_data_directory(tmp_path: Path) -> None:
    """Top-level links to outside (a moved pg_wal, a configuration file) are taken as what
    they point at, pg_wal's segments still left out; a link into the data directory, to it
    or above it, to nothing or to itself stays a link (followed, the walk would take the
    data directory again, WAL included, or stop on the loop)."""
    import stat

    from lifeboat.assets.postgres.backup import walk_pgdata

    pgdata, outside = tmp_path / "pgdata", tmp_path / "outside"
    (pgdata / "base" / "1").mkdir(parents=True)
    (pgdata / "base" / "1" / "1259").write_bytes(b"\0" * 8192)
    (pgdata / "conf").mkdir()
    (pgdata / "conf" / "inner.conf").write_text("port = 5432\n")
    (outside / "pg_wal" / "archive_status").mkdir(parents=True)
    (outside / "pg_wal" / "000000010000000000000001").write_bytes(b"WAL")
    (outside / "postgresql.conf").write_text("shared_buffers = 128MB\n")
    os.symlink(outside / "pg_wal", pgdata / "pg_wal")
    os.symlink(outside / "postgresql.conf", pgdata / "postgresql.conf")
    os.symlink(pgdata / "conf" / "inner.conf", pgdata / "inner.conf")
    os.symlink("..", pgdata / "up")
    os.symlink("/", pgdata / "root")
    os.symlink("loop", pgdata / "loop")
    os.symlink(outside / "gone", pgdata / "gone")

    walked = {rel: st for rel, _path, st in walk_pgdata(pgdata)}

    assert stat.S_ISDIR(walked["pg_wal"].st_mode) and stat.S_ISREG(walked["postgresql.conf"].st_mode)
    assert not [rel for rel in walked if rel.startswith("pg_wal/")]  # the segments stay out
    links = sorted(rel for rel, st in walked.items() if stat.S_ISLNK(st.st_mode))
    assert links == ["gone", "inner.conf", "loop", "root", "up"]
    assert not [rel for rel in walked if rel.startswith(("up/", "root/"))]
