"""The `du` that reads a cold tree's inodes ahead of a backup's walk (lifeboat/readahead.py):
started on the walk's roots while the walk runs, stopped and reaped when it ends, however
it ends, and nothing started where `du` is not installed. A stand-in `du` that waits to be
killed makes the timing the test's, not the machine's (the real one is done in a moment).

Small files opened ahead of their read (``open_ahead``) give the bytes a fresh open would:
appended or cut since the walk included, read again from the start after a seek."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeboat.readahead import AheadFile, metadata_read_ahead, open_ahead, open_batch_ahead
from lifeboat.repo.chunking import read_blocks


@pytest.fixture
def slow_du(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `du` first on PATH that writes its pid and arguments, then waits to be killed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    started = tmp_path / "du-started"
    script = bin_dir / "du"
    script.write_text(
        f'#!/bin/sh\necho "$$ $*" > {started}.tmp\nmv {started}.tmp {started}\nexec sleep 600\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return started


def wait_started(started: Path) -> tuple[int, str]:
    deadline = time.monotonic() + 30
    while not started.exists():
        assert time.monotonic() < deadline, "the du was never started"
        time.sleep(0.01)
    pid, _, args = started.read_text().strip().partition(" ")
    return int(pid), args


def gone(pid: int) -> bool:
    """Neither running nor a zombie waiting to be reaped."""
    return not Path(f"/proc/{pid}").exists()


def test_du_reads_the_roots_beside_the_walk_and_is_reaped_when_it_ends(tmp_path: Path, slow_du: Path) -> None:
    roots = [tmp_path / "a", tmp_path / "b c"]
    with metadata_read_ahead(roots):
        pid, args = wait_started(slow_du)
        assert args == f"-s -x -- {roots[0]} {roots[1]}"  # -x: no other filesystem
        assert not gone(pid)
    assert gone(pid)


def test_du_is_reaped_when_the_walk_fails(tmp_path: Path, slow_du: Path) -> None:
    with pytest.raises(KeyboardInterrupt), metadata_read_ahead([tmp_path]):
        pid, _ = wait_started(slow_du)
        raise KeyboardInterrupt  # Ctrl-C or SIGTERM in the middle of the walk
    assert gone(pid)


def test_without_du_the_walk_runs_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    ran = False
    with metadata_read_ahead([tmp_path]):
        ran = True
    assert ran


def test_the_real_du_leaves_nothing_behind(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"f{i}").write_bytes(b"x")
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    before = set(children.read_text().split())
    with metadata_read_ahead([tmp_path]):
        pass
    assert set(children.read_text().split()) <= before


# --- small files opened ahead and read through the same descriptor ---------------------


def opened_ahead(path: Path, data: bytes) -> AheadFile:
    """``data`` written to ``path``, then the file opened ahead with that size."""
    path.write_bytes(data)
    ahead = open_ahead(str(path), len(data))
    assert ahead is not None
    return ahead


def test_a_file_opened_ahead_gives_its_bytes_and_what_was_appended_after_the_walk(tmp_path: Path) -> None:
    """The walk's size bounds the first read (no 1 MiB buffer for 3 KB), never the content:
    bytes appended since are read too, as a fresh open would read them."""
    path = tmp_path / "app.log"
    first = os.urandom(3000)
    ahead = opened_ahead(path, first)
    more = os.urandom(5000)
    with open(path, "ab") as log:
        log.write(more)
    with ahead:
        assert b"".join(read_blocks(ahead, 1 << 20)) == first + more  # type: ignore[arg-type]


def test_a_file_opened_ahead_and_cut_since_gives_what_is_left(tmp_path: Path) -> None:
    path = tmp_path / "cut.bin"
    data = os.urandom(4000)
    ahead = opened_ahead(path, data)
    os.truncate(path, 10)
    with ahead:
        assert b"".join(read_blocks(ahead, 1 << 20)) == data[:10]  # type: ignore[arg-type]


def test_a_file_opened_ahead_reads_whole_again_after_a_seek_to_its_start(tmp_path: Path) -> None:
    data = os.urandom(2000)
    ahead = opened_ahead(tmp_path / "key.pem", data)
    with ahead:
        assert ahead.read(100) == data[:100]
        ahead.seek(0)
        assert ahead.read() == data


def test_a_link_or_a_missing_file_is_not_opened_ahead(tmp_path: Path) -> None:
    """Left to the usual read, which follows a link or reports the missing file."""
    target = tmp_path / "real.bin"
    target.write_bytes(b"x")
    (tmp_path / "link.bin").symlink_to(target)
    assert open_ahead(str(tmp_path / "link.bin"), 1) is None
    assert open_ahead(str(tmp_path / "missing.bin"), 1) is None


def test_closing_a_file_opened_ahead_twice_closes_its_descriptor_once(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    ahead = opened_ahead(path, b"abc")
    fd = ahead.fd
    ahead.close()
    assert ahead.closed
    with pytest.raises(OSError):
        os.fstat(fd)
    reused = os.open(path, os.O_RDONLY)  # the number may be handed out again: not closed by the second
    try:
        ahead.close()
        os.fstat(reused)
    finally:
        os.close(reused)


def test_files_opened_for_a_batch_are_closed_when_the_opening_is_interrupted(tmp_path: Path) -> None:
    """Ctrl-C, SIGTERM or a deadline lands on the walk's thread, which opens its batches:
    what it had opened of the batch is closed, not left open."""
    paths = []
    for i in range(5):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(b"x" * 10)
        paths.append(str(path))

    def files() -> Iterator[tuple[str, int]]:
        for path in paths:
            yield path, 10
        raise KeyboardInterrupt

    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(KeyboardInterrupt):
        open_batch_ahead(files())
    assert len(os.listdir("/proc/self/fd")) == before
