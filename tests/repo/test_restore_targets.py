"""What `restore --force` does to a target that already holds things: the snapshot's
entries replace whatever holds their names (type conflicts included), nothing else is
deleted, and nothing outside the target changes. Two paths sharing a basename both
come back."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeboat.assets.files import backup_paths, restore_snapshot
from lifeboat.repo import Repository
from lifeboat.storage import open_storage
from tests.attacks.test_restore_escape import make_sentinel, manifest


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
