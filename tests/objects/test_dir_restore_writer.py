"""A `dir://` restore's small objects made by the writer process (assets/objects/dirbatches.py):
every byte comes back, with the mode a restore in this process gives; a writer that dies
midway leaves what it did not make to the restore, which completes; a damaged chunk fails
its own object only; a full disk fails the restore in one line and empties the target
again. No writer outlives a restore. Real files, processes and repositories; the backup
runs through the CLI, the restore in this process (hooks before each run of objects)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from lifeboat import filewriters
from lifeboat.assets.kind import RestoreRequest
from lifeboat.assets.objects import dirbatches
from lifeboat.assets.objects.dirtarget import DiskFull
from lifeboat.assets.registry import load_policy
from lifeboat.crypto.keys import load_recovery_key
from lifeboat.errors import RestoreError
from lifeboat.repo import Repository
from lifeboat.repo.packread import PackRanges
from lifeboat.services.restore import perform
from lifeboat.storage import open_storage
from tests.harness.packs import damage_chunk
from tests.objects.dir_media import dir_media, files_under
from tests.repo.test_restore_writer import (
    Recorded,
    fill_up,
    small_tmpfs,
    started_at_each_get,
    writer_processes,
    writers,
)

__all__ = ["writers"]  # a fixture

SMALL = 700  # more than filewriters.WRITER_FROM small objects in one planned batch


@pytest.fixture(autouse=True)
def no_writer_left() -> Iterator[None]:
    yield
    assert writer_processes() == []


def make_media(source: Path) -> None:
    """Small objects in three directories, and two of several chunks among them."""
    for i in range(SMALL):
        d = source / f"d{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"o{i:04}.bin").write_bytes(os.urandom(300 + i * 7))
    (source / "d1" / "large-a.bin").write_bytes(os.urandom(3 << 20))
    (source / "d2" / "large-b.bin").write_bytes(os.urandom(5 << 20))


def backed_up(tmp_path: Path) -> tuple[Path, Repository]:
    """The media source, backed up by the CLI, and the repository opened for reading."""
    source = tmp_path / "media"
    media = dir_media(tmp_path, source)
    make_media(source)
    media.lb.run("backup", "media")
    repo = Repository.open(
        open_storage(f"file://{tmp_path / 'repo'}"), recovery_key=load_recovery_key(Path(media.recovery))
    )
    return source, repo


def restore(tmp_path: Path, repo: Repository, target: Path) -> dict[str, Any]:
    """The restore's report (as `--json` gives it)."""
    policy = load_policy(tmp_path / "lifeboat.toml")
    return perform(policy, repo, RestoreRequest(asset="media", target=f"dir://{target}")).details


def before_each_run(monkeypatch: pytest.MonkeyPatch, hook: Callable[[int, list[Any]], None]) -> None:
    """Runs ``hook(run number, its items)`` just before a run of objects is read and sent."""
    send = dirbatches.SmallObjects._send
    count = [0]

    def wrapped(self: Any, run: list[Any]) -> None:
        hook(count[0], run)
        count[0] += 1
        send(self, run)

    monkeypatch.setattr(dirbatches.SmallObjects, "_send", wrapped)


def test_small_objects_come_back_byte_for_byte_through_the_writer(
    tmp_path: Path, writers: list[Recorded]
) -> None:
    source, repo = backed_up(tmp_path)
    target = tmp_path / "restored"

    result = restore(tmp_path, repo, target)

    assert len(writers) == 1 and writers[0].written == SMALL  # every small object made there
    assert result["ok"] and result["restored"] == SMALL + 2
    assert files_under(target) == files_under(source)
    umask = os.umask(0)
    os.umask(umask)
    modes = {(p.stat().st_mode & 0o7777) for p in target.rglob("*.bin")}
    assert modes == {0o644 & ~umask}  # as the restore's own writes make them


def test_the_writer_starts_before_the_first_run_when_the_survey_finds_small_objects(
    tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    started = started_at_each_get(monkeypatch)
    source, repo = backed_up(tmp_path)

    result = restore(tmp_path, repo, tmp_path / "restored")

    assert started == [1] and len(writers) == 1 and writers[0].written == SMALL
    assert result["ok"] and files_under(tmp_path / "restored") == files_under(source)


def test_a_writer_that_dies_midway_leaves_its_objects_to_the_restore(
    tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, repo = backed_up(tmp_path)
    target = tmp_path / "restored"

    def kill(number: int, run: list[Any]) -> None:
        if number == 1:
            writers[0].drain()  # the first run answered: made there, whatever the timing
            writers[0]._child.kill()
            writers[0]._child.wait()

    before_each_run(monkeypatch, kill)
    result = restore(tmp_path, repo, target)

    assert writers and result["ok"] and result["failed"] == []
    assert 0 < writers[0].written < SMALL  # the first run made there, the rest here
    assert result["restored"] == SMALL + 2
    assert files_under(target) == files_under(source)


def test_two_writers_make_the_small_objects_in_turn(
    tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filewriters, "WRITERS", 2)
    monkeypatch.setattr(filewriters, "SECOND_WRITER_FROM", SMALL)
    source, repo = backed_up(tmp_path)
    target = tmp_path / "restored"

    result = restore(tmp_path, repo, target)

    assert len(writers) == 2 and all(w.written > 0 for w in writers)
    assert sum(w.written for w in writers) == SMALL
    assert result["ok"] and result["restored"] == SMALL + 2
    assert files_under(target) == files_under(source)


def test_the_second_writer_dying_leaves_its_objects_to_the_restore(
    tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first writer's runs are all answered before the restore takes over what the
    second did not make: no object is made by a writer and the restore at once, and every
    object comes back."""
    monkeypatch.setattr(filewriters, "WRITERS", 2)
    monkeypatch.setattr(filewriters, "SECOND_WRITER_FROM", SMALL)
    monkeypatch.setattr(dirbatches, "SEND_FILES", 100)  # several runs: the writers take turns
    source, repo = backed_up(tmp_path)
    target = tmp_path / "restored"
    runs: list[int] = []

    def kill(number: int, run: list[Any]) -> None:
        runs.append(len(run))
        if number == 3:  # runs 0 and 2 went to the first writer, 1 to the second, 3 would too
            writers[1]._child.kill()
            writers[1]._child.wait()

    unanswered_at_takeover: list[int] = []
    write_left = dirbatches.SmallObjects._write_left

    def taking_over(self: Any) -> None:
        if self._out is None:
            unanswered_at_takeover.append(len(writers[0]._sent))
        write_left(self)

    monkeypatch.setattr(dirbatches.SmallObjects, "_write_left", taking_over)
    before_each_run(monkeypatch, kill)
    result = restore(tmp_path, repo, target)

    assert len(writers) == 2 and result["ok"] and result["failed"] == []
    assert unanswered_at_takeover and set(unanswered_at_takeover) == {0}
    assert writers[0].written == runs[0] + runs[2]  # made there, each once
    assert writers[1].written in (0, runs[1])
    assert result["restored"] == SMALL + 2
    assert files_under(target) == files_under(source)


def test_objects_whose_chunks_alternate_between_packs_are_read_a_pack_range_at_a_time(
    tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every other object backed up first, the rest by a second backup: in key order the
    second snapshot's objects alternate between the first backup's pack and the second's
    (as a bucket's parallel downloads leave them). The restore reads them in pack order:
    a handful of runs, each opening its pack range once, not one run per object."""
    source = tmp_path / "media"
    media = dir_media(tmp_path, source)
    make_media(source)
    for large in source.rglob("large-*.bin"):  # their chunks, stored beside, split the ranges
        large.unlink()
    later = {p: p.read_bytes() for p in sorted(source.rglob("o*.bin"))[1::2]}
    for path in later:
        path.unlink()
    media.lb.run("backup", "media")
    for path, data in later.items():
        path.write_bytes(data)
    media.lb.run("backup", "media")
    repo = Repository.open(
        open_storage(f"file://{tmp_path / 'repo'}"), recovery_key=load_recovery_key(Path(media.recovery))
    )
    newest = repo.snapshots()[-1]
    small = [e for e in repo.reader(newest).iter_entries() if e.type == "file" and len(e.chunks) == 1]
    packs = repo.index().get_many([e.chunks[0] for e in small])
    in_key_order = [packs[e.chunks[0]].pack for e in small]
    assert sum(a != b for a, b in pairwise(in_key_order)) > SMALL // 2  # they do alternate
    runs: list[int] = []
    open_run = PackRanges._open_run

    def counted(self: PackRanges, n: int, blob_ids: list[str]) -> list[bytes]:
        runs.append(len(blob_ids))
        return open_run(self, n, blob_ids)

    monkeypatch.setattr(PackRanges, "_open_run", counted)
    target = tmp_path / "restored"

    result = restore(tmp_path, repo, target)

    assert result["ok"] and result["restored"] == SMALL
    assert len(writers) == 1 and writers[0].written == SMALL
    assert files_under(target) == files_under(source)
    assert sum(runs) == SMALL and len(runs) <= 10, runs


def test_a_damaged_chunk_fails_its_own_object_only(tmp_path: Path, writers: list[Recorded]) -> None:
    source, repo = backed_up(tmp_path)
    [snapshot] = repo.snapshots()
    victim = next(e for e in repo.reader(snapshot).iter_entries() if e.path == "d1/o0301.bin")
    damage_chunk(repo, victim.chunks[0], tmp_path / "repo")
    target = tmp_path / "restored"

    result = restore(tmp_path, repo, target)

    assert writers and not result["ok"]
    assert [f.split(":")[0] for f in result["failed"]] == ["d1/o0301.bin"]
    assert "failed authentication" in result["failed"][0]
    expected = files_under(source)
    del expected["d1/o0301.bin"]
    assert files_under(target) == expected


def test_a_disk_filled_midway_fails_in_one_line_and_empties_the_target(
    tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    _source, repo = backed_up(tmp_path)
    with small_tmpfs(tmp_path / "mnt", "16m") as mnt:
        target = mnt / "target"

        def fill(number: int, run: list[Any]) -> None:
            if number == 1:  # the first run is written; the disk fills before the second
                fill_up(mnt)

        before_each_run(monkeypatch, fill)
        with pytest.raises(RestoreError) as caught:
            restore(tmp_path, repo, target)
        assert str(caught.value).startswith(f"no space left on the filesystem of dir://{target}")
        assert "removed the" in str(caught.value)
        assert sorted(p.name for p in mnt.iterdir()) == ["filler", "target"]
        assert list(target.iterdir()) == []
        assert writers


class _Entry:
    def __init__(self, size: int) -> None:
        self.size, self.chunks = size, ["c"]


class _StandInWriter:
    """The writer's side of the pipe, for the sender's bookkeeping alone: each run is
    answered at once by ``reply(number, run size)`` -> (written, existing, fails)."""

    def __init__(self, reply: Callable[[int, int], tuple[int, list[int], bool]]) -> None:
        self.reply, self.number, self.error = reply, 0, None

    def send(self, specs: list[Any], done: filewriters.Done, failed: Any) -> None:
        if self.error is not None:
            raise self.error
        written, existing, fails = self.reply(self.number, len(specs))
        self.number += 1
        failure: BaseException | None = None
        try:  # as FileWriter._read_reply does: the reply handed on, then the writer's error wins
            done(written, existing, {})
        except BaseException as exc:
            failure = exc
        if fails:
            failure = OSError(28, "No space left on device", specs[written + len(existing)][1])
        if failure is not None:
            self.error = failure

    def drain(self) -> None:
        if self.error is not None:
            raise self.error


def _sender(
    writer: _StandInWriter, full_at: str | None = None
) -> tuple[dirbatches.SmallObjects, dict[str, str]]:
    """A sender over a stand-in writer; what each object became: "made", "here" (written
    through the DirWriter) or "read" (restored from the repository on its own). Writing
    ``full_at`` here finds the disk full."""
    became: dict[str, str] = {}

    def write_here(item: Any, data: bytes) -> None:
        if item.key == full_at:
            raise DiskFull(OSError(28, "No space left on device"))
        became[item.key] = "here"

    class Reader:
        def read_small(self, entries: list[Any]) -> list[bytes]:
            return [b"x" * e.size for e in entries]

    class Dirs:
        def make_parent(self, parent: str) -> None:
            pass

    def made(objects: int, size: int) -> None:
        became.setdefault("made", "")
        became["made"] += "+" * objects

    sender = dirbatches.SmallObjects(
        writer,  # type: ignore[arg-type]
        Reader(),  # type: ignore[arg-type]
        Dirs(),  # type: ignore[arg-type]
        lambda item: became.__setitem__(item.key, "read"),
        write_here,
        made,
    )
    return sender, became


@pytest.mark.parametrize("disk_full_here", [False, True])
def test_a_writer_failing_in_a_run_that_also_found_a_file_loses_no_object(disk_full_here: bool) -> None:
    """Run 1: the writer makes object 0, finds object 1 already there, and fails at object 2
    (a full disk): objects 1 and 2 onward, and every later run, are written here; and when
    writing object 1 here finds the disk full too, that is what the restore raises (it then
    empties the target), never a restore that ends as if it were complete."""
    from lifeboat.assets.objects.restore import Item

    def reply(number: int, size: int) -> tuple[int, list[int], bool]:
        return (size, [], False) if number == 0 else (1, [1], True)

    items = [Item(f"d/o{i:04}", entry=_Entry(100)) for i in range(3 * 512)]  # type: ignore[arg-type]
    sender, became = _sender(_StandInWriter(reply), full_at=items[513].key if disk_full_here else None)
    with sender:
        if disk_full_here:
            with pytest.raises(DiskFull):
                sender.restore(items)
                sender.settle()
            return
        sender.restore(items)
        sender.settle()

    made = len(became.pop("made"))
    assert made == 512 + 1  # the first run, and object 0 of the second
    assert set(became) == {i.key for i in items[513:]} and set(became.values()) == {"here"}
