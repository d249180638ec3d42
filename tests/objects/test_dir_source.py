"""A `dir://` objects source is backed up as it is walked, into a streamed tree (issue #18):
keys whose order differs between a flat sort and a walk (`photo.jpg` and `photo/x.jpg`,
`%`-escaped segments) still find their parent's entry, so an unchanged backup reads nothing
and a changed file is read again; the restore gives back every byte."""

from __future__ import annotations

import os
from pathlib import Path

from lifeboat.assets.objects.keypaths import relpath_to_key
from lifeboat.assets.objects.source import DirSource, ObjectInfo
from lifeboat.repo.parents import walk_key
from tests.harness import LifeboatCli, PolicyBuilder

# relative paths in the source directory: names that sort differently flat and per
# level ('.', '-' and ' ' come before '/'), upper case, escaped segments ('%25' is the key
# segment '%', '%2E%2E' the key segment '..'), an empty file, a deep one
NAMES = [
    "photo.jpg",
    "photo/x.jpg",
    "photo-1/y.jpg",
    "photo 2/z.jpg",
    "Zeta/a.bin",
    "a/b/c/d/e/f/deep.bin",
    "%25/percent.bin",
    "%2E%2E/dots.bin",
    "-a/minus.bin",  # before ".." as a key, after "%2E%2E" as a name
    "empty.bin",
]


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_directory_source_backs_up_in_walk_order_reuses_unchanged_files_and_restores_exactly(
    tmp_path: Path,
) -> None:
    source = tmp_path / "media"
    for i, name in enumerate(NAMES):
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"" if name == "empty.bin" else os.urandom(100 + 37 * i))
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .data_class("standard", rpo="1d", rto="1h")
        .objects("media", f"dir://{source}")
        .write(tmp_path / "lifeboat.toml")
    )
    lb = LifeboatCli(policy)
    recovery = str(tmp_path / "recovery.key")
    lb.run("init", "--recovery-key-out", recovery)

    first = lb.json("backup", "media")[0]
    unchanged = lb.json("backup", "media")[0]
    (source / "photo" / "x.jpg").write_bytes(os.urandom(999))  # changed
    (source / "photo" / "new.jpg").write_bytes(os.urandom(55))  # added
    (source / "Zeta" / "a.bin").unlink()  # removed
    changed = lb.json("backup", "media")[0]

    labels = {s["id"]: s["labels"] for s in lb.json("snapshots", "--asset", "media")}
    assert labels[first["snapshot"]]["downloaded"] == str(len(NAMES))
    assert labels[unchanged["snapshot"]]["downloaded"] == "0"
    assert labels[unchanged["snapshot"]]["reused"] == str(len(NAMES))
    assert labels[changed["snapshot"]]["downloaded"] == "2"
    assert labels[changed["snapshot"]]["reused"] == str(len(NAMES) - 2)

    target = tmp_path / "restored"
    restore = ("restore", "media", "--snapshot", changed["snapshot"], "--target", f"dir://{target}")
    lb.run(*restore, "--recovery-key", recovery)
    assert files_under(target) == files_under(source)


def test_the_walk_gives_keys_in_the_order_of_a_streamed_tree(tmp_path: Path) -> None:
    """Each directory before its content, key segments (not file names) sorted at every
    level: the order the parent's entries are read in (repo/parents.py)."""
    for name in NAMES:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    walked = list(DirSource(f"dir://{tmp_path}").walk_current())
    keys = [item.key for item in walked]
    assert keys == sorted(keys, key=walk_key)
    assert {i.key for i in walked if isinstance(i, ObjectInfo)} == {relpath_to_key(n) for n in NAMES}
    assert keys.index("-a") < keys.index("..") < keys.index("../dots.bin") < keys.index("photo")
