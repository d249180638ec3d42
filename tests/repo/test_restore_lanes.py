"""Restores write their large files in two lanes side by side (repo/reader.py,
``restore_lanes``): each large file in one lane only, the small ones with the first; the
files come back byte for byte, counted once; a damaged chunk in either lane fails the
restore in one line and leaves no lane running. Real repository, files and threads; the
size from which a file counts as large is lowered so that the test's files count."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from lifeboat.assets.files.tree import backup_paths, restore_snapshot
from lifeboat.errors import IntegrityError
from lifeboat.repo import Repository, SnapshotInfo, reader
from lifeboat.repo.model import Entry
from lifeboat.storage import open_storage
from tests.harness.packs import damage_chunk

LARGE = 256 << 10
SIZES = [3 << 20, 2 << 20, 1 << 20, 700 << 10]  # four large files, two lanes


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    return Repository.open(storage, recovery_key=recovery)


@pytest.fixture(autouse=True)
def large_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "LANE_FROM", LARGE)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # lanes on any machine the suite runs on


def backed_up(repo: Repository, tmp_path: Path) -> tuple[Path, SnapshotInfo]:
    src = tmp_path / "src"
    (src / "small").mkdir(parents=True)
    for i, size in enumerate(SIZES):
        (src / f"large{i}").write_bytes(os.urandom(size))
    for i in range(40):
        (src / "small" / f"f{i:02}").write_bytes(os.urandom(100 + 37 * i))
    return src, backup_paths(repo, "data", [src])


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def lane_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("restore-lane")]


def lanes_used(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many lanes each batch written in lanes had (filled in as the restore runs)."""
    used: list[int] = []
    in_lanes = reader._in_lanes

    def recorded(lanes: list[list[Entry]], *args: object) -> None:
        used.append(len(lanes))
        in_lanes(lanes, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(reader, "_in_lanes", recorded)
    return used


def test_each_large_file_is_in_one_lane_and_small_files_in_the_first() -> None:
    small = [Entry(f"s{i}", size=10) for i in range(5)]
    files = [Entry(f"l{i}", size=s) for i, s in enumerate(SIZES)] + small

    lanes = reader.restore_lanes(files)

    assert len(lanes) == 2
    assert sorted(e.path for lane in lanes for e in lane) == sorted(e.path for e in files)
    assert {e.path for e in lanes[0] if e.size < LARGE} == {f"s{i}" for i in range(5)}
    assert all(e.size >= LARGE for e in lanes[1])
    sizes = [sum(e.size for e in lane if e.size >= LARGE) for lane in lanes]
    assert sorted(sizes) == sorted([(3 << 20) + (700 << 10), (2 << 20) + (1 << 20)])  # balanced by size


def test_one_large_file_keeps_one_lane() -> None:
    files = [Entry("big", size=SIZES[0])] + [Entry(f"s{i}", size=10) for i in range(5)]
    assert reader.restore_lanes(files) == [files]


def test_lanes_restore_every_byte_once(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, info = backed_up(repo, tmp_path)
    used = lanes_used(monkeypatch)
    target = tmp_path / "target"

    stats = restore_snapshot(repo, info, target)

    assert used == [2]
    assert tree_bytes(target / "src") == tree_bytes(src)
    assert stats.files == len(SIZES) + 40
    assert stats.bytes == sum(SIZES) + sum(100 + 37 * i for i in range(40))
    assert lane_threads() == []


def test_a_restore_from_s3_reads_each_pack_once_in_one_lane(
    tmp_path: Path, s3_server: str, make_bucket: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lanes plan their pack ranges apart, and a pack holds chunks of files in both: from S3
    that read each pack in pieces, a request each. One lane reads each pack once."""
    storage = open_storage(f"s3://{make_bucket()}/repo", endpoint_url=s3_server, trust_endpoint=True)
    _, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    s3_repo = Repository.open(storage, recovery_key=recovery)
    src, info = backed_up(s3_repo, tmp_path)
    used = lanes_used(monkeypatch)
    ranges: list[str] = []  # the packs read by the restore's planned ranges
    get = type(storage).get

    def counted(self: object, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if threading.current_thread().name.startswith("pack-get"):
            ranges.append(name)
        return get(self, name, offset, length)  # type: ignore[arg-type]

    monkeypatch.setattr(type(storage), "get", counted)

    restore_snapshot(s3_repo, info, tmp_path / "target")

    assert used == []
    assert tree_bytes(tmp_path / "target" / "src") == tree_bytes(src)
    assert ranges and len(ranges) == len(set(ranges))


@pytest.mark.parametrize("lane", [0, 1])
def test_a_damaged_chunk_in_either_lane_fails_the_restore(
    repo: Repository, tmp_path: Path, lane: int
) -> None:
    _src, info = backed_up(repo, tmp_path)
    lanes = reader.restore_lanes([e for e in repo.reader(info).entries() if e.type == "file"])
    victim = max(lanes[lane], key=lambda e: e.size)  # a large file, in that lane only
    assert victim.size >= LARGE and all(victim not in other for other in lanes if other is not lanes[lane])
    chunk = victim.chunks[len(victim.chunks) // 2]
    damaged = damage_chunk(repo, chunk, tmp_path / "repo")

    with pytest.raises(IntegrityError) as caught:
        restore_snapshot(repo, info, tmp_path / "target")

    assert str(caught.value) == f"chunk {chunk[:16]} in {damaged}: failed authentication"
    assert lane_threads() == []


def test_a_failing_lane_stops_the_others_at_once() -> None:
    """The first lane works on until it is told to stop: a failure in the second tells it
    then, not once the first has finished its batch."""
    stop = threading.Event()
    began, told = threading.Event(), []

    def write(lane: list[Entry], first: bool) -> None:
        if first:
            began.set()
            told.append(stop.wait(timeout=30))
        else:
            began.wait(timeout=30)
            raise IntegrityError("chunk 0123456789abcdef in data/00/x: failed authentication")

    with pytest.raises(IntegrityError, match="failed authentication"):
        reader._in_lanes([[Entry("a")], [Entry("b")]], write, stop)
    assert told == [True]
    assert lane_threads() == []


def test_a_ctrl_c_in_the_first_lane_ends_the_others_before_it_is_raised() -> None:
    stop = threading.Event()
    began, told = threading.Event(), []

    def write(lane: list[Entry], first: bool) -> None:
        if first:
            began.wait(timeout=30)
            raise KeyboardInterrupt
        began.set()
        told.append(stop.wait(timeout=30))

    with pytest.raises(KeyboardInterrupt):
        reader._in_lanes([[Entry("a")], [Entry("b")]], write, stop)
    assert told == [True]  # the second lane had ended, told to stop, before the raise
    assert lane_threads() == []
