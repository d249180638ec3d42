"""The whole index kept in the local cache (repo/whole_index.py) against an insider who may
rewrite the state dir but holds no key: an older copy put back after the index files it
stands for were merged or pruned (used, it would answer for blobs that are gone: a backup
would take a chunk as stored that is not), and a copy edited, cut short or re-tagged
without the key (a dropped record: a backup would store a chunk again, a restore look in
the wrong place). Each is ignored and the index is loaded file by file. The control: the
same dropped record tagged with the key is used, so the key is what stops the edit."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeboat.repo import whole_index
from lifeboat.repo.consolidate import consolidate_indexes
from lifeboat.repo.index import CACHE_FORM, IndexCache
from lifeboat.repo.local_cache import CacheSeal
from lifeboat.repo.whole_index import WholeIndex, keep_whole
from tests.repo.test_whole_index import (
    answers,
    backed_up,
    file_by_file,
    kept_and_used,
    kept_from_one_blob,
    kept_path,
    opened,
    reads,
)

__all__ = ["kept_from_one_blob", "reads"]  # fixtures


def test_a_consolidation_replaces_it_and_an_older_one_put_back_is_not_used(
    tmp_path: Path, reads: list[str]
) -> None:
    """The insider's replay: the whole index of a time before the files it stands for were
    merged (and their packs could be pruned) would make backups take away chunks as stored."""
    repo = opened(tmp_path)
    for n in range(4):
        backed_up(repo, tmp_path, n)
    kept_and_used(tmp_path, reads)
    older = kept_path(repo).read_bytes()
    assert consolidate_indexes(opened(tmp_path), limit=1) is not None
    kept_path(repo).write_bytes(older)
    reads.clear()

    loaded = opened(tmp_path).index()

    assert sorted(reads) == sorted(o.name for o in repo.storage.list("index/"))
    assert answers(loaded) == answers(file_by_file(repo))
    assert set(loaded.files) == {o.name for o in repo.storage.list("index/")}


def test_an_older_one_put_back_after_a_prune_is_not_used(tmp_path: Path, reads: list[str]) -> None:
    """The same replay after a prune deleted the packs of a forgotten snapshot: used, it
    would answer for blobs that are gone."""
    repo = opened(tmp_path)
    for n in range(3):
        backed_up(repo, tmp_path, n)
    kept_and_used(tmp_path, reads)
    older = kept_path(repo).read_bytes()
    gone = next(s for s in repo.snapshots() if s.asset == "app1")
    repo.storage.delete(f"snapshots/{gone.id}")
    before = len(opened(tmp_path).index())
    report = opened(tmp_path).prune()
    assert report.packs_removed + report.packs_repacked > 0
    kept_path(repo).write_bytes(older)
    reads.clear()

    loaded = opened(tmp_path).index()

    assert sorted(reads) == sorted(o.name for o in repo.storage.list("index/"))
    assert answers(loaded) == answers(file_by_file(repo))
    assert len(loaded) < before  # the forgotten snapshot's blobs are no longer answered for


def test_one_damaged_or_rewritten_without_the_key_is_ignored(tmp_path: Path, reads: list[str]) -> None:
    """An insider with the state dir drops a record from the table (or garbles it): a backup
    trusting it would store a chunk again, or a restore look in the wrong place."""
    repo = opened(tmp_path)
    for n in range(2):
        backed_up(repo, tmp_path, n)
    kept_and_used(tmp_path, reads)
    path = kept_path(repo)
    stored = bytearray(path.read_bytes())
    json_at = len(whole_index.MAGIC) + 8
    for flip in (len(stored) // 2, len(stored) - 40, json_at + 10):  # table, last record, the meta
        changed = bytearray(stored)
        changed[flip] ^= 0x01
        path.write_bytes(bytes(changed))
        reads.clear()

        loaded = opened(tmp_path).index()

        assert sorted(reads) == sorted(o.name for o in repo.storage.list("index/"))
        assert answers(loaded) == answers(file_by_file(repo))
    path.write_bytes(bytes(stored[:-100]))  # cut short
    reads.clear()
    assert answers(opened(tmp_path).index()) == answers(file_by_file(repo)) and reads
    # meta of another shape, and a length past anything the file holds (a sparse file):
    # never used, never a failed load, nothing that large made
    for meta in (b'{"files": []}', b'"files"', b"[1, 2]"):
        path.write_bytes(whole_index.MAGIC + len(meta).to_bytes(8, "little") + meta + bytes(64))
        assert answers(opened(tmp_path).index()) == answers(file_by_file(repo))
    with open(path, "wb") as sparse:
        sparse.write(whole_index.MAGIC + (1 << 40).to_bytes(8, "little"))
        sparse.truncate(1 << 41)
    assert answers(opened(tmp_path).index()) == answers(file_by_file(repo))


@pytest.mark.parametrize("with_the_key", [False, True])
def test_a_copy_missing_a_record_is_used_only_when_tagged_with_the_key(
    tmp_path: Path, reads: list[str], with_the_key: bool
) -> None:
    repo = opened(tmp_path)
    for n in range(2):
        backed_up(repo, tmp_path, n)
    opened(tmp_path).index()
    assert repo.cache_dir is not None
    directory = repo.cache_dir / "index"
    kept = IndexCache(directory, repo.cache_seal).whole(lambda meta: True)
    assert kept is not None
    dropped = next(iter(kept.table))
    kept.table.remove(dropped)
    insiders_seal = CacheSeal(lambda data: b"\x07" * 32)  # a key of its own making
    seal = repo.cache_seal if with_the_key else insiders_seal
    keep_whole(directory, seal, CACHE_FORM, WholeIndex(kept.meta, kept.table))
    reads.clear()

    again = opened(tmp_path).index()

    if with_the_key:  # the control: the edit itself would matter
        assert reads == [] and dropped not in again
    else:
        assert sorted(reads) == sorted(o.name for o in repo.storage.list("index/"))
        assert dropped in again and answers(again) == answers(file_by_file(repo))
