"""Prune asks only which blobs are used, not who uses them: the used ids are held raw
(`References.used`), and which packs hold a used blob comes from the index without a list
of every id (`Index.packs_holding`). Both must answer exactly what the full forms answer,
or prune would delete a pack something still needs."""

from __future__ import annotations

import os
import random
from pathlib import Path

from lifeboat.assets.files.tree import backup_paths
from lifeboat.repo import Repository
from lifeboat.repo.idtable import IdTable
from lifeboat.repo.index import Index
from lifeboat.repo.model import References
from lifeboat.repo.references import collect_references
from lifeboat.storage import open_storage


def _repository(tmp_path: Path) -> Repository:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    return Repository.open(storage, recovery_key=recovery)


def test_the_used_ids_are_exactly_the_blobs_with_users(tmp_path: Path) -> None:
    repo = _repository(tmp_path)
    src = tmp_path / "src"
    for d in range(3):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(30):
            (src / f"d{d}" / f"f{f}").write_bytes(os.urandom(200 + f))
    backup_paths(repo, "tree", [src])
    (src / "d1" / "f3").write_bytes(os.urandom(999))  # a second snapshot with a changed file
    backup_paths(repo, "tree", [src])

    full = collect_references(repo, read_trees=True, keep_refused=True)
    compact = collect_references(repo, read_trees=True, keep_refused=True, users=False)
    assert full.users and compact.users == {}
    assert len(compact.used) == len(full.users)
    assert all(blob_id in compact.used for blob_id in full.users)
    assert sorted(compact.used) == sorted(full.users)


def test_an_id_that_is_no_blob_id_names_no_blob() -> None:
    refs = References(record_users=False)
    refs.add("a" * 64, "snap", "path")
    refs.add("not a blob id", "ref", "wal/x")  # a forged ref's chunk list
    refs.add(None, "shard", "media")  # type: ignore[arg-type]  # a pending shard's raw JSON
    assert list(refs.used) == ["a" * 64]


def test_packs_holding_answers_what_blobs_by_pack_answers() -> None:
    """Random indexes with blobs listed in several packs (a second location is a fallback:
    the pack holding it must not be deleted while the blob is used)."""
    rng = random.Random(18)
    for _ in range(50):
        index = Index()
        ids = [f"{rng.getrandbits(256):064x}" for _ in range(rng.randint(1, 60))]
        for p in range(rng.randint(1, 8)):
            blobs = rng.sample(ids, rng.randint(1, len(ids)))
            entries = [[b, "data", 16 + 100 * i, 100, 90] for i, b in enumerate(blobs)]
            index.add_pack({"id": f"{p:064x}", "blobs": entries})
        needed = IdTable()
        for b in rng.sample(ids, rng.randint(0, len(ids))):
            needed.add(b)

        holding, unneeded = index.packs_holding(needed)

        expected = {p for p, blobs in index.blobs_by_pack().items() if any(b in needed for b in blobs)}
        assert holding == expected
        assert unneeded == sum(1 for b in index.blob_ids() if b not in needed)


def _merged_by_key(files: list[list[dict]]) -> list[dict]:
    """merge_entries as it was written before: a key tuple per blob entry."""
    packs: dict[str, dict[tuple, list]] = {}
    for entries in files:
        for pack in entries:
            blobs = packs.setdefault(pack["id"], {})
            for blob in pack["blobs"]:
                blobs.setdefault(
                    (str(blob[0]), str(blob[1]), int(blob[2]), int(blob[3]), int(blob[4])), list(blob)
                )
    return [{"id": p, "blobs": [blobs[b] for b in sorted(blobs)]} for p, blobs in sorted(packs.items())]


def test_merged_index_entries_are_what_they_were_one_key_per_blob_ago() -> None:
    """The same packs, blobs and order (an index file's name is its bytes' digest): a pack
    listed by several files, the same entry twice, entries that disagree about a blob."""
    from lifeboat.repo.consolidate import merge_entries

    rng = random.Random(7)
    ids = [f"{rng.getrandbits(256):064x}" for _ in range(40)]
    packs = [f"{rng.getrandbits(256):064x}" for _ in range(5)]
    for _ in range(50):
        files = []
        for _ in range(rng.randint(1, 4)):
            entries = []
            for pack in rng.sample(packs, rng.randint(1, len(packs))):
                blobs = [
                    [rng.choice(ids), rng.choice(["data", "tree"]), rng.randint(16, 99), rng.randint(1, 9), 5]
                    for _ in range(rng.randint(1, 12))
                ]
                entries.append({"id": pack, "blobs": blobs + rng.sample(blobs, rng.randint(0, len(blobs)))})
            files.append(entries)
        expected = _merged_by_key(files)
        assert merge_entries(files) == expected
