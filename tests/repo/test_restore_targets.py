"""What `restore --force` does to a target that already holds things: the snapshot's
entries replace whatever holds their names (type conflicts included), nothing else is
deleted, and nothing outside the target changes. Two paths sharing a basename both
come back."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lifeboat.assets.files.tree import backup_paths, restore_snapshot
from lifeboat.errors import IntegrityError, RestoreError
from lifeboat.repo import Repository
from lifeboat.storage import open_storage
from lifeboat.targetdir import TargetDir
from tests.attacks.test_restore_escape import EscapeEnv, make_env, make_sentinel, manifest
from tests.harness.packs import damage_trees_of


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    return Repository.open(storage, recovery_key=recovery)


def test_force_resolves_type_conflicts_and_keeps_unrelated_files(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src" / "data"
    (src / "d").mkdir(parents=True)
    (src / "conf").write_text("conf\n")
    (src / "d" / "inner").write_text("inner\n")
    (src / "link").symlink_to("conf")
    (src / "sub").mkdir()
    (src / "sub" / "f").write_text("f\n")
    info = backup_paths(repo, "config", [src])
    expected = manifest(src)

    outside = tmp_path / "outside"
    make_sentinel(outside)
    target = tmp_path / "target"
    data = target / "data"
    (data / "conf" / "deep").mkdir(parents=True)  # a directory where the snapshot has a file
    (data / "conf" / "deep" / "x").write_text("old\n")
    (data / "conf" / "escape").symlink_to(outside)  # removed with it, never followed
    (data / "conf" / "etc").symlink_to(outside / "etc")
    (data / "d").write_text("a file where the snapshot has a directory\n")
    (data / "link").mkdir()  # a directory where the snapshot has a link
    (data / "link" / "y").write_text("y\n")
    (data / "sub").symlink_to(outside / "etc")  # a link where the snapshot has a directory
    (data / "keep.txt").write_text("unrelated, kept\n")
    (target / "other").mkdir()
    (target / "other" / "z").write_text("unrelated, kept\n")
    before = manifest(outside)

    restore_snapshot(repo, info, target, force=True)

    assert manifest(outside) == before
    after = manifest(data)
    assert after.pop("keep.txt") is not None
    assert after == expected
    assert (target / "other" / "z").read_text() == "unrelated, kept\n"


def test_two_paths_sharing_a_basename_both_restore(repo: Repository, tmp_path: Path) -> None:
    p1, p2, solo = tmp_path / "x" / "p1" / "data", tmp_path / "x" / "p2" / "data", tmp_path / "solo"
    for root, text in ((p1, "one"), (p2, "two"), (solo, "three")):
        (root / "sub").mkdir(parents=True)
        (root / "sub" / "file.txt").write_text(text)
        (root / "same-name").write_text(text * 1000)
    info = backup_paths(repo, "config", [p1, p2, solo])
    target = tmp_path / "target"

    restore_snapshot(repo, info, target)

    # documented in the README: a shared basename is stored under the whole path
    for root in (p1, p2):
        assert manifest(target / str(root).lstrip("/")) == manifest(root)
    assert manifest(target / "solo") == manifest(solo)  # a unique basename keeps its name
    assert not (target / "data").exists()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts a tmpfs with the given options (we run as root in the test sandbox)."""
    mounts: list[Path] = []

    def mount(options: str) -> Path:
        path = tmp_path / f"mnt{len(mounts)}"
        path.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs to fill up here: {proc.stderr.strip()}")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def env(tmp_path: Path) -> EscapeEnv:
    e = make_env(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "media").mkdir()
    (tmp_path / "platform-keys").mkdir()
    e.run("init", "--shares-out", str(tmp_path / "shares"))
    return e


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("lifeboat: error: ") and all(n in lines[0] for n in needles), proc.stderr
    assert len(lines) <= 2 and "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    return lines[0]


def everything_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_a_restore_too_big_for_the_filesystem_is_refused_before_writing(env: EscapeEnv, small_fs) -> None:
    mnt = small_fs("size=8m")
    (env.root / "config" / "big.bin").write_bytes(os.urandom(12 << 20))
    snap = env.backup("config")
    (env.root / "media" / "big.obj").write_bytes(os.urandom(12 << 20))
    media = env.backup("media")

    line = one_line_error(env.restore("config", snap, str(mnt / "t"), check=False), "MiB needed")
    assert "12.0 MiB needed, 8.0 MiB free" in line
    line = one_line_error(env.restore("media", media, f"dir://{mnt / 'm'}", check=False), "MiB needed")
    assert everything_under(mnt) <= {"m"}  # nothing written (dir:// made its empty directory)


def test_disk_full_midway_removes_what_the_restore_wrote_and_a_retry_works(env: EscapeEnv, small_fs) -> None:
    mnt = small_fs("size=8m")
    (env.root / "config" / "big.bin").write_bytes(os.urandom(5 << 20))
    for i in range(5):
        (env.root / "config" / f"small{i}.txt").write_text(f"small {i}\n")
    snap = env.backup("config")
    # An older big.bin fills the disk: the up-front estimate counts its space as coming
    # back, but the new copy is written beside it first (replaced atomically), and fails.
    old = os.urandom(5 << 20)
    (mnt / "t" / "config").mkdir(parents=True)
    (mnt / "t" / "config" / "big.bin").write_bytes(old)
    (mnt / "t" / "keep.txt").write_text("unrelated\n")

    line = one_line_error(env.restore("config", snap, str(mnt / "t"), "--force", check=False), "no space")
    assert "removed" in line
    assert everything_under(mnt) == {"t", "t/config", "t/config/big.bin", "t/keep.txt"}
    assert (mnt / "t" / "config" / "big.bin").read_bytes() == old

    (mnt / "t" / "config" / "big.bin").unlink()
    env.restore("config", snap, str(mnt / "t"), "--force")
    assert manifest(mnt / "t" / "config") == manifest(env.root / "config")


def test_out_of_inodes_leaves_no_partial_tree(env: EscapeEnv, small_fs) -> None:
    mnt = small_fs("size=8m,nr_inodes=40")
    for i in range(60):
        (env.root / "config" / f"f{i:02}").write_text(f"file {i}\n")
        (env.root / "media" / f"o{i:02}").write_text(f"object {i}\n")
    snap, media = env.backup("config"), env.backup("media")

    one_line_error(env.restore("config", snap, str(mnt / "t"), check=False), "no space", "removed")
    assert everything_under(mnt) == set()  # the target it created is gone too: a retry is not blocked
    one_line_error(env.restore("media", media, f"dir://{mnt / 'm'}", check=False), "no space", "removed")
    assert everything_under(mnt) <= {"m"}


def test_out_of_inodes_in_an_empty_target_empties_it_again(env: EscapeEnv, small_fs) -> None:
    mnt = small_fs("size=8m,nr_inodes=40")
    deep = env.root / "config" / "a" / "b"
    deep.mkdir(parents=True)
    for i in range(60):
        (deep / f"f{i:02}").write_text(f"file {i}\n")
    snap = env.backup("config")
    (mnt / "e").mkdir()

    line = one_line_error(env.restore("config", snap, str(mnt / "e"), check=False), "no space")
    removed = int(line.split("removed the ")[1].split()[0])
    assert removed > 3  # the directories and the files written before the inodes ran out
    assert everything_under(mnt) == {"e"}  # the operator's directory stays, emptied again


def test_taking_back_an_empty_target_follows_no_link(tmp_path: Path) -> None:
    """A target that was empty is emptied again on a full disk, not file by file: a link
    the restore wrote (to a directory outside) is removed, and what it points to stays."""
    outside = tmp_path / "outside"
    make_sentinel(outside)
    before = manifest(outside)
    root = tmp_path / "target"
    root.mkdir()
    tree = TargetDir(root, fresh=True)
    try:
        fd = tree.acquire("a/b")
        tmp, out = tree.open_temp(fd, "f")
        os.write(out, b"restored\n")
        os.close(out)
        tree.install(fd, tmp, "f", "a/b/f")
        tree.release("a/b")
        tree.symlink("a/out", str(outside))
        tree.release("a")
        assert tree.created == []  # nothing held per name
        assert tree.take_back() == 4  # a, a/b, a/b/f, a/out
    finally:
        tree.close()
    assert root.is_dir() and list(root.iterdir()) == []
    assert manifest(outside) == before


def test_setuid_and_owners_come_back_only_with_owners(repo: Repository, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a setuid file owned by another user needs root")
    src = tmp_path / "src" / "bin"
    src.mkdir(parents=True)
    (src / "tool").write_bytes(b"#!/bin/sh\n")
    os.chown(src / "tool", 1234, 1234)
    os.chmod(src / "tool", 0o4755)
    (src / "shared").mkdir()
    os.chmod(src / "shared", 0o2775)
    info = backup_paths(repo, "config", [src])

    as_root = tmp_path / "as-root"
    repo.reader(info).restore_tree(as_root)
    st = os.lstat(as_root / "bin" / "tool")
    assert (st.st_mode & 0o7777, st.st_uid) == (0o4755, 1234)
    assert os.lstat(as_root / "bin" / "shared").st_mode & 0o7777 == 0o2775

    # what an unprivileged restore does (it cannot chown): the bits would grant the
    # restoring user's rights, so they are dropped
    unprivileged = tmp_path / "unprivileged"
    repo.reader(info).restore_tree(unprivileged, chown=False)
    st = os.lstat(unprivileged / "bin" / "tool")
    assert (st.st_mode & 0o7777, st.st_uid) == (0o755, 0)
    assert os.lstat(unprivileged / "bin" / "shared").st_mode & 0o7777 == 0o775


def test_a_read_only_target_is_one_line_and_never_retried(env: EscapeEnv, small_fs) -> None:
    mnt = small_fs("size=1m,ro")
    (env.root / "config" / "a").write_text("a\n")
    (env.root / "media" / "o").write_text("o\n")
    snap, media = env.backup("config"), env.backup("media")

    one_line_error(env.restore("config", snap, str(mnt / "t"), check=False), "Read-only file system")
    line = one_line_error(env.restore("media", media, f"dir://{mnt / 'm'}", check=False), "Read-only")
    assert "attempts" not in line


@pytest.mark.parametrize("force", [False, True])
def test_a_forged_path_out_of_the_target_restores_nothing(
    repo: Repository, tmp_path: Path, force: bool
) -> None:
    """A tree naming ``z/../../escaped.txt`` (only a forged one can) is refused with nothing
    written outside the target and nothing of the snapshot left inside: into an empty target
    it is found as it is written (the space check used the recorded totals) and the target
    is emptied again; with --force the exact pass refuses it before anything is written."""
    with repo.backup("forged", "files") as session:
        session.add_bytes("inside.txt", b"written first")
        session.add_bytes("z/../../escaped.txt", b"never anywhere")  # sorts after inside.txt
        info = session.commit()
    target = tmp_path / "restore" / "t"
    if force:
        target.mkdir(parents=True)
        (target / "kept.txt").write_bytes(b"the operator's")
    with pytest.raises(RestoreError, match="unsafe path"):
        restore_snapshot(repo, info, target, force=force)
    assert not (tmp_path / "restore" / "escaped.txt").exists()
    assert everything_under(tmp_path / "restore") <= {"t", "t/kept.txt"}
    if force:
        assert (target / "kept.txt").read_bytes() == b"the operator's"


def test_a_snapshot_that_clearly_fits_restores_whole_with_its_recorded_totals(
    repo: Repository, tmp_path: Path
) -> None:
    """The fast space check takes the snapshot's totals: the restore still writes every
    file, and reports the bytes the files hold."""
    src = tmp_path / "src"
    for d in range(3):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(50):
            (src / f"d{d}" / f"f{f}.txt").write_bytes(os.urandom(100 + f))
    info = backup_paths(repo, "tree", [src])
    stats = restore_snapshot(repo, info, tmp_path / "out")
    assert stats.files == 150 and stats.bytes == info.stats.bytes == sum(100 + f for f in range(50)) * 3
    for d in range(3):
        for f in range(50):
            restored = tmp_path / "out" / "src" / f"d{d}" / f"f{f}.txt"
            assert restored.read_bytes() == (src / f"d{d}" / f"f{f}.txt").read_bytes()


def test_a_target_filled_after_the_emptiness_check_is_not_treated_as_empty(tmp_path: Path) -> None:
    """The caller saw an empty target, then another process wrote into it: TargetDir looks
    again, so nothing there is replaced as if new, nor removed when the restore is undone."""
    target = tmp_path / "t"
    target.mkdir()
    (target / "theirs.txt").write_text("written by somebody else")
    tree = TargetDir(target, fresh=True)
    try:
        assert not tree.fresh and not tree.was_empty
        tree.take_back()
    finally:
        tree.close()
    assert (target / "theirs.txt").read_text() == "written by somebody else"


def test_a_tree_document_damaged_midway_leaves_the_empty_target_empty(
    repo: Repository, tmp_path: Path
) -> None:
    """The space check no longer reads the whole tree first, so a directory's damaged tree
    document is found after other directories were written: the target is emptied again,
    as when the up-front pass refused the snapshot."""
    src = tmp_path / "src"
    (src / "d1").mkdir(parents=True)
    (src / "d1" / "old.txt").write_bytes(b"in the first snapshot")
    backup_paths(repo, "tree", [src])
    first_packs = set(repo.index(refresh=True).packs())
    (src / "d0").mkdir()
    (src / "d0" / "new.txt").write_bytes(b"only in the second")
    second = backup_paths(repo, "tree", [src])  # d0 (walked first) new, d1's document reused
    damage_trees_of(repo, first_packs, tmp_path / "repo")
    target = tmp_path / "restore" / "t"
    with pytest.raises(IntegrityError):
        restore_snapshot(repo, second, target)
    assert everything_under(tmp_path / "restore") <= {"t"}
