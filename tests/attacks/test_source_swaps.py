"""Adversary: a user who owns a directory under a files or keys asset's paths, backed up by
lifeboat running as root. Between the walk's look at an entry and its read, the user swaps
it: for a link to a file only root may read (/etc/shadow; a stand-in here), for a pipe
(with or without a writer that sends nothing), for a directory, or swaps a directory above
it for a link to another directory. Before, a large file (or one not opened ahead) was
read through the link and stored under the user's name, readable to whoever restores it,
and a pipe held the backup up for as long as its writer lived. Now each is left out and
counted in the snapshot's `vanished` label; a file renamed over the walked one where it
stands (as an editor saves) is read as it now is."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lifeboat.assets.files.tree import backup_paths, restore_snapshot
from lifeboat.repo import Repository
from tests.harness.trees import local_repository
from tests.harness.trees import regular_files as restored


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return local_repository(tmp_path)


def test_entries_swapped_after_the_walk_are_never_read_through_and_are_counted(repo, tmp_path, monkeypatch):
    """A file opened as the walk saw it: a pipe that replaced it after the walk, with a
    writer that sends nothing, is not waited on (before: the read waited for as long as the
    writer lived), a link that replaced it is not followed (before: a large file, or one
    not opened ahead, was read through the link, so the snapshot held the bytes of whatever
    it pointed at, as a regular file of the walked name), and a directory is no internal
    error. All are left out, as a file deleted since the walk is, and counted."""
    import lifeboat.assets.files.tree as tree

    src = tmp_path / "src"
    src.mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(b"TOPSECRET " * 30_000)  # large: read the usual way, not opened ahead
    files = {name: os.urandom(size) for name, size in [("a.bin", 500), ("b.bin", 500), ("c.bin", 300_000)]}
    files["d.bin"] = os.urandom(500)
    files["e.bin"] = os.urandom(300_000)  # large, turned into a directory
    files["f.bin"] = os.urandom(500)  # a pipe with no writer: reads as empty, not waited on
    files["sub/g.bin"] = os.urandom(500)  # its directory swapped for a link to another
    files["h.bin"] = os.urandom(500)  # another file renamed over it (an editor's save): read as it is now
    (src / "sub").mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "g.bin").write_bytes(b"TOPSECRET too")
    walk_as_is = tree.walk
    writers: list[int] = []

    def walk_then_swap(roots, *args):
        for item in walk_as_is(roots, *args):
            yield item
            if item.name.endswith("/b.bin"):
                (src / "b.bin").unlink()
                os.mkfifo(src / "b.bin")
                writers.append(os.open(src / "b.bin", os.O_RDWR))  # a writer that sends nothing
            if item.name.endswith(("/c.bin", "/d.bin")):
                path = Path(item.path)
                path.unlink()
                path.symlink_to(secret)
            if item.name.endswith("/e.bin"):
                (src / "e.bin").unlink()
                (src / "e.bin").mkdir()
            if item.name.endswith("/f.bin"):
                (src / "f.bin").unlink()
                os.mkfifo(src / "f.bin")
            if item.name.endswith("/h.bin"):
                (src / "h.new").write_bytes(b"saved by an editor")
                os.replace(src / "h.new", src / "h.bin")
            if item.name.endswith("/g.bin"):
                (src / "sub").rename(src / "sub.moved")
                (src / "sub").symlink_to(elsewhere)

    monkeypatch.setattr(tree, "walk", walk_then_swap)
    try:
        info = backup_paths(repo, "tree", [src])
    finally:
        for fd in writers:
            os.close(fd)
    monkeypatch.undo()
    assert info.labels["vanished"] == "6"
    restore_snapshot(repo, info, tmp_path / "out")
    assert restored(tmp_path / "out") == {"src/a.bin": files["a.bin"], "src/h.bin": b"saved by an editor"}
    assert not list((tmp_path / "out").rglob("*.bin"))[2:]  # nothing else, no link either
    # the next backup takes them as they are now: the pipes not captured, the links as links
    again = backup_paths(repo, "tree", [src])
    assert "vanished" not in again.labels and again.labels["not_captured"] == "2"
    restore_snapshot(repo, again, tmp_path / "again")
    assert os.readlink(tmp_path / "again" / "src" / "c.bin") == str(secret)
