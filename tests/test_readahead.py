"""The `du` that reads a cold tree's inodes ahead of a backup's walk (lifeboat/readahead.py):
a child of the backup while the walk runs, reaped when it ends, however it ends, and no
child at all where `du` is not installed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lifeboat.readahead import metadata_read_ahead


def _children() -> set[int]:
    """This process's children, running or not yet reaped (every thread's)."""
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        found.update(int(pid) for pid in (task / "children").read_text().split())
    return found


def _du_children(before: set[int]) -> set[int]:
    """The children started since ``before`` that are a `du` (another test's server may
    start children of its own meanwhile)."""
    found = set()
    for pid in _children() - before:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "du":
                found.add(pid)
        except OSError:  # not ours to wait for: it ended and was reaped meanwhile
            pass
    return found


def make_tree(root: Path) -> Path:
    for d in range(5):
        (root / f"d{d}").mkdir(parents=True)
        for f in range(20):
            (root / f"d{d}" / f"f{f}").write_bytes(b"x")
    return root


def test_du_runs_beside_the_walk_and_is_reaped_when_it_ends(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    before = _children()
    with metadata_read_ahead([tree]):
        during = _du_children(before)
        assert len(during) == 1
    assert not _children() & during  # reaped: no zombie, no orphan left running


def test_du_is_reaped_when_the_walk_fails(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    before = _children()
    with pytest.raises(KeyboardInterrupt), metadata_read_ahead([tree]):
        during = _du_children(before)
        raise KeyboardInterrupt  # Ctrl-C or SIGTERM in the middle of the walk
    assert during and not _children() & during


def test_without_du_the_walk_runs_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_tree(tmp_path / "tree")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    before = _children()
    ran = False
    with metadata_read_ahead([tree]):
        ran = True
        assert not _du_children(before)
    assert ran
