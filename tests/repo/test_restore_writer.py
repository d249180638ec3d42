"""The writer process that creates a restore's small files (lifeboat/filewriters.py): the
files come back byte for byte with their modes, owners and times; what is planted in the
target during the restore is replaced, never written through; a directory swapped for a
link is never entered; a full disk fails the restore in one line and empties the target
again, a writer that dies fails it in one line; no writer outlives a restore. A restore of
thousands of small files hands its batches to two writers in turn.
Real files and processes, as root (owners)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lifeboat import filewriters
from lifeboat.assets.files.tree import backup_paths, restore_snapshot
from lifeboat.errors import IntegrityError, RestoreError
from lifeboat.filewriters import FileWriter
from lifeboat.repo import Repository, SnapshotInfo, reader
from lifeboat.storage import open_storage
from lifeboat.targetdir import TargetDir
from tests.attacks.test_restore_escape import manifest
from tests.harness.packs import damage_chunk

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners and mounts need root")

FILES = 600  # more than filewriters.WRITER_FROM: the writer is used without any setting changed


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    return Repository.open(storage, recovery_key=recovery)


def make_tree(root: Path, files: int = FILES) -> Path:
    """Small files in three directories, with modes, owners and times of their own."""
    for i in range(files):
        d = root / f"d{i % 3}" / ("deep" if i % 5 == 0 else "")
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"f{i:04}"
        path.write_bytes(hashlib.sha256(str(i).encode()).digest() * (1 + i % 40))
        os.chmod(path, (0o600, 0o640, 0o755, 0o4755)[i % 4])
        if i % 7 == 0:
            os.chown(path, 1234, 4321)
            os.chmod(path, (0o600, 0o640, 0o755, 0o4755)[i % 4])  # a chown clears setuid
        os.utime(path, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i))
    return root


def backed_up(repo: Repository, tmp_path: Path, files: int = FILES) -> tuple[Path, SnapshotInfo]:
    """A tree of ``files`` small files under tmp_path/src and its snapshot."""
    src = make_tree(tmp_path / "src", files)
    return src, backup_paths(repo, "config", [src])


class Recorded(FileWriter):
    """A real writer that remembers itself once it is ready and counts the files it said it
    made, so a test can see it was used (and end it)."""

    made: ClassVar[list[Recorded]] = []

    def __init__(self, root_fd: int) -> None:
        super().__init__(root_fd)
        self.written = 0
        self.read_back = 0  # files it replied it read back equal

    def ready(self) -> None:
        super().ready()
        if self not in Recorded.made:
            Recorded.made.append(self)

    def send(
        self,
        specs: list[Any],
        done: filewriters.Done,
        failed: Any,
        *,
        read_back: bool = False,
    ) -> None:
        def counted(written: int, existing: list[int], held: list[int]) -> None:
            self.written += written
            self.read_back += len(held)
            done(written, existing, held)

        super().send(specs, counted, failed, read_back=read_back)


@pytest.fixture
def writers(monkeypatch: pytest.MonkeyPatch) -> list[Recorded]:
    Recorded.made = []
    monkeypatch.setattr(filewriters, "FileWriter", Recorded)
    return Recorded.made


def writer_processes() -> list[int]:
    """Live file writers started by this process."""
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:  # a thread that ended meanwhile
            continue
        found += [int(pid) for pid in children if b"lifeboat.filewriters" in command_line(pid)]
    return found


def command_line(pid: str) -> bytes:
    """A child's command line. Popen returns once the child is in exec, and until exec has
    set up the new program's arguments it reads empty: read again until it does not."""
    deadline = time.monotonic() + 10
    while True:
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes()
            ended = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in "ZX"
        except OSError:  # gone
            return b""
        if line or ended or time.monotonic() > deadline:  # an ended child has none either
            return line
        os.sched_yield()


def before_each_batch(monkeypatch: pytest.MonkeyPatch, hook: Callable[[int, list[Any]], None]) -> None:
    """Runs ``hook(batch number, its entries)`` just before a batch goes to the writer."""
    send = reader._ChunkWriter._send_whole
    count = [0]

    def wrapped(self: Any, out: FileWriter, batch: list[Any], failed: Any) -> None:
        hook(count[0], batch)
        count[0] += 1
        send(self, out, batch, failed)

    monkeypatch.setattr(reader._ChunkWriter, "_send_whole", wrapped)


def test_many_small_files_come_back_with_their_bytes_modes_owners_and_times(
    repo: Repository, tmp_path: Path, writers: list[Recorded]
) -> None:
    src, info = backed_up(repo, tmp_path)
    target = tmp_path / "target"

    stats = restore_snapshot(repo, info, target)

    assert len(writers) == 1  # one writer for the whole restore
    assert manifest(target / "src") == manifest(src)
    assert stats.files == FILES and stats.verified == FILES
    assert writer_processes() == []


def test_two_writers_take_the_batches_in_turn_and_every_file_comes_back(
    repo: Repository, tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filewriters, "WRITERS", 2)
    monkeypatch.setattr(filewriters, "SECOND_WRITER_FROM", FILES)  # 600 files: two batches
    src, info = backed_up(repo, tmp_path)
    target = tmp_path / "target"

    stats = restore_snapshot(repo, info, target)

    assert len(writers) == filewriters.WRITERS == 2
    assert all(w.written > 0 for w in writers) and sum(w.written for w in writers) == FILES
    assert manifest(target / "src") == manifest(src)  # bytes, modes, owners, times
    assert stats.files == FILES and stats.verified == FILES
    assert writer_processes() == []


def test_below_the_threshold_one_writer_does_it_all(
    repo: Repository, tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filewriters, "WRITERS", 2)
    monkeypatch.setattr(filewriters, "SECOND_WRITER_FROM", FILES + 1)
    src, info = backed_up(repo, tmp_path)
    restore_snapshot(repo, info, tmp_path / "target")
    assert [w.written for w in writers] == [FILES]  # a second process would cost more than it saves
    assert manifest(tmp_path / "target" / "src") == manifest(src)


def test_one_writer_takes_every_batch_however_many_small_files(
    repo: Repository, tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second writer only made the kernel work harder: by default none starts, even for
    a batch past the threshold at which one could."""
    monkeypatch.setattr(filewriters, "SECOND_WRITER_FROM", FILES)
    src, info = backed_up(repo, tmp_path)
    restore_snapshot(repo, info, tmp_path / "target")
    assert [w.written for w in writers] == [FILES]
    assert manifest(tmp_path / "target" / "src") == manifest(src)


def test_the_second_writer_dying_fails_the_restore_in_one_line_and_ends_the_first(
    repo: Repository, tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filewriters, "WRITERS", 2)
    monkeypatch.setattr(filewriters, "SECOND_WRITER_FROM", FILES)
    _src, info = backed_up(repo, tmp_path)
    target = tmp_path / "target"

    def kill(number: int, batch: list[Any]) -> None:
        if number == 1:  # the second batch is the second writer's
            writers[1]._child.kill()
            writers[1]._child.wait()

    before_each_batch(monkeypatch, kill)
    with pytest.raises(RestoreError, match=r"^cannot write into .*: the file writer ended$"):
        restore_snapshot(repo, info, target)
    assert len(writers) == 2 and writer_processes() == []


def test_writers_expected_start_before_the_first_batch_which_takes_them_and_none_outlives_the_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore whose snapshot totals promise many small files starts its writers before it
    has read the tree (their ~40 ms start overlaps that), the first batch takes them without
    starting more, and ending the slot ends them, used or not."""
    monkeypatch.setattr(filewriters, "WRITERS", 2)
    (tmp_path / "used").mkdir()
    (tmp_path / "unused").mkdir()
    used, unused = TargetDir(tmp_path / "used", fresh=True), TargetDir(tmp_path / "unused", fresh=True)
    try:
        slot = filewriters.WriterSlot(used)
        slot.expect(filewriters.WRITER_FROM - 1)
        assert writer_processes() == []  # too few files to be worth a process
        slot.expect(filewriters.SECOND_WRITER_FROM)
        started = sorted(writer_processes())
        assert len(started) == filewriters.WRITERS == 2
        out = slot.get(filewriters.SECOND_WRITER_FROM)
        assert out is not None and out.count == 2 and sorted(writer_processes()) == started
        slot.close(kill=False)
        assert writer_processes() == []

        never_used = filewriters.WriterSlot(unused)  # the restore failed before its first batch
        never_used.expect(filewriters.WRITER_FROM)
        assert len(writer_processes()) == 1
        never_used.close(kill=True)
        assert writer_processes() == []
    finally:
        used.close()
        unused.close()


def started_at_each_get(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """At each ``WriterSlot.get``: how many writers had already been started for it (by
    ``expect``) and not yet taken."""
    seen: list[int] = []
    get = filewriters.WriterSlot.get

    def recorded(self: filewriters.WriterSlot, small_files: int = 0) -> Any:
        seen.append(len(self._starting))
        return get(self, small_files)

    monkeypatch.setattr(filewriters.WriterSlot, "get", recorded)
    return seen


def test_a_restore_of_many_small_files_starts_its_writer_before_its_first_batch(
    repo: Repository, tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot's totals say its 600 files are small: the writer starts as the restore
    begins, before the tree is read, and the first batch takes it."""
    started = started_at_each_get(monkeypatch)
    src, info = backed_up(repo, tmp_path)

    restore_snapshot(repo, info, tmp_path / "target")

    assert started == [1] and len(writers) == 1 and writers[0].written == FILES
    assert manifest(tmp_path / "target" / "src") == manifest(src)


def test_a_writer_that_replied_with_an_error_exits_at_once_and_never_dumps_core(tmp_path: Path) -> None:
    """After its error reply, the writer's read-ahead thread is still reading the pipe: the
    writer exits with status 0 at once (an interpreter shutting down beside that thread
    aborts, with a core dump of the key bytes it holds where the limit allows one)."""
    (tmp_path / "target").mkdir()
    tree = TargetDir(tmp_path / "target", fresh=True)
    writer = FileWriter(tree.root_fd)
    try:
        writer.ready()
        limits = Path(f"/proc/{writer._child.pid}/limits").read_text()
        writer.send([("", "a/b", b"key", 0o600, -1, -1, 0)], lambda *_: None, threading.Event())
        with pytest.raises(OSError, match=r"not a file name: 'a/b'"):
            writer.drain()
    finally:
        writer.close()
        tree.close()
    assert re.search(r"^Max core file size\s+0\s+0\s", limits, re.MULTILINE)
    assert writer._child.returncode == 0
    assert list((tmp_path / "target").iterdir()) == []


def test_a_few_files_are_written_in_process(
    repo: Repository, tmp_path: Path, writers: list[Recorded]
) -> None:
    src, info = backed_up(repo, tmp_path, files=20)
    restore_snapshot(repo, info, tmp_path / "target")
    assert writers == []  # a process costs more to start than twenty files
    assert manifest(tmp_path / "target" / "src") == manifest(src)


@contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the block (the test is skipped where
    none can be mounted)."""
    where.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
    mounted = subprocess.run(mount, capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def fill_up(directory: Path) -> None:
    """A file named filler in ``directory``, written until its filesystem is full."""
    with open(directory / "filler", "wb") as out:
        try:
            while True:
                out.write(b"\0" * (64 << 10))
                out.flush()
        except OSError:
            pass


def test_a_disk_filled_midway_fails_in_one_line_and_empties_the_target(
    repo: Repository, tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    _src, info = backed_up(repo, tmp_path)
    with small_tmpfs(tmp_path / "mnt", "4m") as mnt:
        target = mnt / "target"

        def fill(number: int, batch: list[Any]) -> None:
            if number == 1:  # the first batch is written; the disk fills before the second
                fill_up(mnt)

        before_each_batch(monkeypatch, fill)
        with pytest.raises(RestoreError) as caught:
            restore_snapshot(repo, info, target)
        assert str(caught.value).startswith(f"no space left on the filesystem of {target}")
        assert "removed the" in str(caught.value)
        assert sorted(p.name for p in mnt.iterdir()) == ["filler"]
        assert writers and writer_processes() == []


def test_a_writer_that_dies_fails_the_restore_in_one_line(
    repo: Repository, tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    _src, info = backed_up(repo, tmp_path)
    target = tmp_path / "target"

    def kill(number: int, batch: list[Any]) -> None:
        if number == 1:
            writers[0]._child.kill()
            writers[0]._child.wait()

    before_each_batch(monkeypatch, kill)
    with pytest.raises(RestoreError, match=r"^cannot write into .*: the file writer ended$"):
        restore_snapshot(repo, info, target)
    assert writer_processes() == []


def test_a_tampered_chunk_is_named_on_the_writer_path(
    repo: Repository, tmp_path: Path, writers: list[Recorded]
) -> None:
    _src, info = backed_up(repo, tmp_path)
    entry = next(e for e in repo.reader(info).entries() if e.path.endswith("f0300"))
    damaged = damage_chunk(repo, entry.chunks[0], tmp_path / "repo")

    with pytest.raises(IntegrityError) as caught:
        restore_snapshot(repo, info, tmp_path / "target")
    assert str(caught.value) == f"chunk {entry.chunks[0][:16]} in {damaged}: failed authentication"
    assert writers and writer_processes() == []


@pytest.fixture(autouse=True)
def no_writer_left() -> Iterator[None]:
    yield
    assert writer_processes() == []


def test_a_writer_that_cannot_start_leaves_the_files_to_the_restore(
    repo: Repository, tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, info = backed_up(repo, tmp_path)
    monkeypatch.setattr("sys.executable", "/bin/false")  # starts, and exits at once

    restore_snapshot(repo, info, tmp_path / "target")

    assert writers == []  # it never became ready
    assert manifest(tmp_path / "target" / "src") == manifest(src)
