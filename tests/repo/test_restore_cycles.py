"""A restore leaves nothing for the cyclic collector: `restore` runs with the collector
collecting seldom (memory.collect_rarely), so a batch's plan (every chunk's location, its
pack ranges) that a reference cycle kept alive would stay in memory for the rest of a long
restore. Files of 1 MiB and more are flushed as they complete, by futures whose callbacks
held the batch's writer: with the collector off, reference counts alone must free it."""

from __future__ import annotations

import gc
import os
from pathlib import Path

from lifeboat.repo import Repository
from lifeboat.repo.packread import PackRanges
from lifeboat.repo.reader import FLUSH_FROM
from lifeboat.storage import open_storage


def test_a_restore_of_large_files_frees_its_plan_without_the_collector(tmp_path: Path) -> None:
    repo, _, recovery = Repository.create(open_storage(f"file://{tmp_path / 'repo'}"))
    large = os.urandom(FLUSH_FROM + FLUSH_FROM // 2)  # flushed as it completes
    with repo.backup("app", "files") as session:
        session.add_bytes("large.bin", large)
        session.add_bytes("small.txt", b"a small file beside it\n")
        info = session.commit()
    reader = Repository.open(repo.storage, recovery_key=recovery)

    gc.collect()
    gc.disable()
    try:
        before = plans()
        reader.reader(info).restore_tree(tmp_path / "out")
        after = plans()
    finally:
        gc.enable()

    assert (tmp_path / "out" / "large.bin").read_bytes() == large
    assert after == before  # freed by reference counts: no cycle held the batch's plan


def plans() -> int:
    """The pack-range plans alive in this process."""
    return sum(1 for o in gc.get_objects() if isinstance(o, PackRanges))
