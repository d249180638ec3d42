"""The `du` that reads a cold tree's inodes ahead of a backup's walk (lifeboat/readahead.py):
started on the walk's roots while the walk runs, stopped and reaped when it ends, however
it ends, and nothing started where `du` is not installed. A stand-in `du` that waits to be
killed makes the timing the test's, not the machine's (the real one is done in a moment)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lifeboat.readahead import metadata_read_ahead


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
