"""bench/repo.py's second backup measures a fresh change on every run: each run's 2% change
is new content, and the tree is put back afterwards, however often the bench is re-run."""

from __future__ import annotations

import hashlib
from pathlib import Path

from bench.repo import apply_change, make_data, undo_change

SIZE = 32 << 20


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def changed_files(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name, sha in after.items() if before[name] != sha}


def test_each_run_changes_two_percent_anew_and_the_tree_comes_back(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_data(src, SIZE)
    original = digest(src)

    first = apply_change(tmp_path, src, SIZE, seed=1001)
    after_first = digest(src)
    assert 0.015 * SIZE < first.written < 0.03 * SIZE
    assert first.regions and first.incompressible > 0  # the big files and the small ones both change
    assert any(name.startswith("big/") for name in changed_files(original, after_first))

    undo_change(tmp_path)
    assert digest(src) == original

    # a re-run (the same work directory, run 1 again) changes the tree again ...
    again = apply_change(tmp_path, src, SIZE, seed=1001)
    assert again.written == first.written and digest(src) == after_first
    # ... and the next run's change is other content
    second = apply_change(tmp_path, src, SIZE, seed=1002)  # undoes the pending change first
    assert changed_files(original, digest(src)) != changed_files(original, after_first)
    assert second.written > 0.015 * SIZE

    undo_change(tmp_path)
    undo_change(tmp_path)  # nothing pending: a no-op
    assert digest(src) == original


def test_an_existing_tree_of_another_size_is_regenerated(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_data(src, SIZE // 4)
    make_data(src, SIZE)
    assert (
        SIZE * 0.99 < sum(p.stat().st_size for p in src.rglob("*.*") if p.name != ".complete") < SIZE * 1.01
    )
