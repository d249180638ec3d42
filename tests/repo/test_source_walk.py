"""What a files or keys backup's walk captures of its source, and what it refuses, for
sources that are not plain trees of regular files: roots that are links or share a name,
entries deleted or swapped while the walk runs, names that are not UTF-8, special files,
and files written moments before the walk (assets/files/tree.py)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from lifeboat.assets.files.tree import backup_paths, restore_snapshot
from lifeboat.errors import ConfigError, StorageError
from lifeboat.repo import Repository
from tests.harness.settle import settle
from tests.harness.trees import local_repository
from tests.harness.trees import regular_files as files_under


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return local_repository(tmp_path)


def write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def test_a_root_that_is_a_link_is_followed_and_stored_under_the_links_name(repo, tmp_path):
    real = tmp_path / "mnt" / "secrets" / "keys"
    write(real, {"tls.key": b"key material\n", "sub/ca.pem": b"ca\n"})
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "keys").symlink_to(real)
    info = backup_paths(repo, "k", [tmp_path / "etc" / "keys"])
    assert info.stats.files == 2
    restore_snapshot(repo, info, tmp_path / "out")
    assert files_under(tmp_path / "out") == {"keys/tls.key": b"key material\n", "keys/sub/ca.pem": b"ca\n"}
    (tmp_path / "etc" / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"gone is a symbolic link to .*nowhere, which does not exist"):
        backup_paths(repo, "k", [tmp_path / "etc" / "gone"])


def test_roots_whose_names_would_nest_are_stored_apart_and_each_restores(repo, tmp_path):
    # /…/r2/data and /…/r3/data share a name, so both take their absolute paths, whose first
    # part is the name of the first root, which takes its absolute path too. Before, r2's
    # and r3's trees were stored inside the first root's, and a restore wrote r3's file
    # over r2's
    first_part = tmp_path.parts[1]
    one, two, three = tmp_path / "r1" / first_part, tmp_path / "r2" / "data", tmp_path / "r3" / "data"
    shadow = f"{two.relative_to('/' + first_part)!s}/f"  # where r2's f went inside r1's tree
    write(one, {"own.txt": b"r1\n", shadow: b"r1's own\n"})
    write(two, {"f": b"r2\n"})
    write(three, {"f": b"r3\n"})
    info = backup_paths(repo, "files", [one, two, three])
    restore_snapshot(repo, info, tmp_path / "out")
    assert files_under(tmp_path / "out") == {
        f"{str(one).lstrip('/')}/own.txt": b"r1\n",
        f"{str(one).lstrip('/')}/{shadow}": b"r1's own\n",
        f"{str(two).lstrip('/')}/f": b"r2\n",
        f"{str(three).lstrip('/')}/f": b"r3\n",
    }
    # a root inside another under the same name: no two names to give them
    inner = one.parent / "x" / one.parent.name
    inner.mkdir(parents=True)
    with pytest.raises(ConfigError, match="would be stored under the same name"):
        backup_paths(repo, "files", [one.parent, inner])


def test_entries_deleted_while_the_walk_runs_are_left_out_and_counted(repo, tmp_path, monkeypatch):
    import lifeboat.assets.files.tree as tree

    src = tmp_path / "src"
    write(src, {"a": b"a", "b": b"b", "d/c": b"c", "e/f": b"f"})
    real_lstat = os.lstat

    def lstat_after_a_delete(path, *args, **kwargs):  # deleted between the listing and the lstat
        if str(path).endswith(("/b", "/e")):
            Path(path).unlink() if str(path).endswith("/b") else (Path(path) / "f").unlink()
            if str(path).endswith("/e"):
                Path(path).rmdir()
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(tree.os, "lstat", lstat_after_a_delete)
    info = backup_paths(repo, "files", [src])
    monkeypatch.undo()
    assert info.labels["vanished"] == "2"  # b, and e (deleted with f before its lstat)
    restore_snapshot(repo, info, tmp_path / "out")
    assert files_under(tmp_path / "out") == {"src/a": b"a", "src/d/c": b"c"}


def test_a_name_that_is_not_utf8_stops_the_backup_naming_its_bytes(repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "fine.txt").write_bytes(b"x")
    os.close(os.open(os.fsencode(src) + b"/caf\xe9.txt", os.O_CREAT | os.O_WRONLY, 0o644))
    with pytest.raises(StorageError, match=r"caf\\xe9\.txt' is not UTF-8") as raised:
        backup_paths(repo, "files", [src])
    assert "exclude" in (raised.value.hint or "")
    assert repo.snapshots() == []
    info = backup_paths(repo, "files", [src], exclude=["caf*"])  # excluded: no longer in the way
    assert info.stats.files == 1


def test_sockets_and_fifos_are_counted_as_not_captured(repo, tmp_path):
    src = tmp_path / "src"
    write(src, {"kept": b"kept"})
    os.mkfifo(src / "fifo")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(src / "sock"))
    try:
        info = backup_paths(repo, "files", [src])
    finally:
        listener.close()
    assert info.stats.files == 1 and info.labels["not_captured"] == "2"


def test_a_file_written_moments_before_the_walk_is_read_again_by_the_next_backup(repo, tmp_path):
    """A write sets the file's time before it copies its bytes, so a file read just then may
    be stored with old bytes under its new time. Trusted as unchanged, it would stay so in
    every later snapshot until it changed again: it is read again by the next backup."""
    src = tmp_path / "src"
    write(src, {"old.key": b"settled", "new.key": b"just written"})
    settle(src)
    now = time.time_ns()
    # an hour ahead: after the walk's start however long the machine takes to get there
    # (its own time, not "now", which a slow start would leave more than 2 s behind)
    os.utime(src / "new.key", ns=(now + 3600 * 10**9, now + 3600 * 10**9))
    backup_paths(repo, "files", [src])
    second = backup_paths(repo, "files", [src])
    assert second.stats.reused_files == 1  # old.key; new.key read again
    old = now - 86400 * 10**9  # new.key's time a day before: the next backup after a read trusts it
    os.utime(src / "new.key", ns=(old, old))
    third = backup_paths(repo, "files", [src])
    fourth = backup_paths(repo, "files", [src])
    assert (third.stats.reused_files, fourth.stats.reused_files) == (1, 2)
