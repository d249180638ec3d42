"""A restore's writer process (lifeboat/filewriters.py) against somebody who can write where
it works while it runs, as root: a file or a link planted in the target is replaced, never
written through; a directory swapped for a link to outside is never entered; a module
planted in the working directory (/tmp, a shared target) never runs in it. The same for
the small objects of a `dir://` restore, which the writer makes too. Nothing
outside the target changes (a sentinel's manifest: content, mode, owner, mtime). The
planting happens just before a batch is handed to the writer (a hook, not a race)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lifeboat.assets.files.tree import restore_snapshot
from lifeboat.repo import Repository
from tests.attacks.test_restore_escape import make_sentinel, manifest
from tests.objects.dir_media import files_under
from tests.objects.test_dir_restore_writer import backed_up as media_backed_up
from tests.objects.test_dir_restore_writer import before_each_run
from tests.objects.test_dir_restore_writer import restore as restore_media
from tests.repo.test_restore_writer import (
    FILES,
    Recorded,
    backed_up,
    before_each_batch,
    repo,
    writer_processes,
    writers,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attack matters as root; owners need root")
__all__ = ["repo", "writers"]  # fixtures


@pytest.fixture(autouse=True)
def no_writer_left() -> Iterator[None]:
    yield
    assert writer_processes() == []


def test_what_is_planted_during_the_restore_is_replaced_never_written_through(
    repo: Repository, tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, info = backed_up(repo, tmp_path)
    outside = tmp_path / "outside"
    make_sentinel(outside)
    before = manifest(outside)
    target = tmp_path / "target"

    def plant(number: int, batch: list[Any]) -> None:
        if number == 0:
            first, second = (target / e.path for e in batch[:2])
            first.write_text("planted by somebody else\n")
            second.symlink_to(outside / "victim")  # a link where the snapshot has a file

    before_each_batch(monkeypatch, plant)
    restore_snapshot(repo, info, target)

    assert writers and manifest(target / "src") == manifest(src)
    assert manifest(outside) == before


def test_a_directory_swapped_for_a_link_is_never_written_through(
    repo: Repository, tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer opens each parent from the target's descriptor without following links:
    a directory swapped for a link to outside is not entered, and its files are handed back
    to the restore, which writes them through the directory it made (moved, still inside)."""
    src, info = backed_up(repo, tmp_path)
    outside = tmp_path / "outside"
    make_sentinel(outside)
    before = manifest(outside)
    target = tmp_path / "target"
    swapped: list[Path] = []

    def swap(number: int, batch: list[Any]) -> None:
        if number == 0:
            parent = (target / batch[0].path).parent
            parent.rename(parent.with_name(parent.name + ".moved"))
            parent.symlink_to(outside)
            swapped.append(parent)

    before_each_batch(monkeypatch, swap)
    stats = restore_snapshot(repo, info, target)

    assert manifest(outside) == before  # nothing written through the link
    assert stats.files == FILES and writers
    moved = swapped[0].with_name(swapped[0].name + ".moved")
    originals = sorted(p.name for p in (src / swapped[0].relative_to(target / "src")).iterdir())
    assert sorted(p.name for p in moved.iterdir()) == originals


def test_a_module_planted_in_the_current_directory_is_never_imported(
    repo: Repository, tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root restoring from a directory other users can write to (/tmp, a shared target): a
    planted module named like one the writer imports must not run in it."""
    src, info = backed_up(repo, tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    ran = tmp_path / "planted-module-ran"
    for module in ("dataclasses", "subprocess", "threading", "typing", "lifeboat"):
        (shared / f"{module}.py").write_text(f"open({str(ran)!r}, 'w').write('{module}')\n")
    monkeypatch.chdir(shared)

    restore_snapshot(repo, info, tmp_path / "target")

    assert writers and not ran.exists()
    assert manifest(tmp_path / "target" / "src") == manifest(src)


def media_and_sentinel(tmp_path: Path) -> tuple[Path, Repository, Path, Path]:
    """A backed-up media source, its repository, a sentinel outside the target, the target."""
    source, repo = media_backed_up(tmp_path)
    make_sentinel(tmp_path / "outside")
    return source, repo, tmp_path / "outside", tmp_path / "restored"


def test_what_is_planted_during_a_directory_restore_of_objects_is_replaced_never_written_through(
    tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, repo, outside, target = media_and_sentinel(tmp_path)
    before = manifest(outside)

    def plant(number: int, run: list[Any]) -> None:
        if number == 0:
            first, second = (target / item.key for item in run[:2])
            first.parent.mkdir(parents=True, exist_ok=True)
            first.write_text("planted by somebody else\n")
            second.symlink_to(outside / "victim")  # a link where the snapshot has an object

    before_each_run(monkeypatch, plant)
    result = restore_media(tmp_path, repo, target)

    assert writers and writers[0].written == 700 - 2 and result["ok"]  # the two planted: here
    assert files_under(target) == files_under(source)
    assert not any(p.is_symlink() for p in target.rglob("*"))
    assert manifest(outside) == before


def test_a_directory_swapped_for_a_link_during_a_directory_restore_of_objects_is_never_written_through(
    tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, repo, outside, target = media_and_sentinel(tmp_path)
    before = manifest(outside)

    def swap(number: int, run: list[Any]) -> None:
        if number == 1:  # a directory the first run made
            parent = target / "d0"
            parent.rename(target / "d0.moved")
            parent.symlink_to(outside)

    before_each_run(monkeypatch, swap)
    result = restore_media(tmp_path, repo, target)

    assert writers and result["ok"]
    assert manifest(outside) == before  # nothing written through the link
    restored = {k.replace("d0.moved/", "d0/", 1): v for k, v in files_under(target).items()}
    assert restored == files_under(source)
