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
