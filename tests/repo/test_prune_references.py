"""Prune asks only which blobs are used, not who uses them: the used ids are held raw
(`References.used`), and which packs hold a used blob comes from the index without a list
of every id (`Index.pack_usage`), and the index entries of the packs prune lists again come
from the in-memory index a pass at a time (`Index.pack_entries`), not from every index file
read again. Each must answer exactly what the full forms answer, or prune would delete a
pack something still needs, or write an index that forgets where a blob is."""

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
    assert list(refs.invalid) == ["not a blob id"]  # check reports it as a chunk no index lists


def _random_index(rng: random.Random) -> tuple[Index, list[list[dict]], list[str]]:
    """An index built from random index files (blobs listed in several packs and files,
    the same entry twice, entries that disagree about a blob), the files, and the ids."""
    index = Index()
    ids = [f"{rng.getrandbits(256):064x}" for _ in range(rng.randint(1, 60))]
    packs = [f"{p:064x}" for p in range(rng.randint(1, 8))]
    files = []
    for _ in range(rng.randint(1, 3)):
        entries = []
        for pack in rng.sample(packs, rng.randint(1, len(packs))):
            blobs = rng.sample(ids, rng.randint(1, len(ids)))
            listed = [
                [b, rng.choice(["data", "tree"]), 16 + 100 * i, 100 + i % 3, 90] for i, b in enumerate(blobs)
            ]
            entries.append({"id": pack, "blobs": listed + rng.sample(listed, rng.randint(0, len(listed)))})
        files.append(entries)
    for n, entries in enumerate(files):
        index.files[f"index/{n}"] = [pack["id"] for pack in entries]
        for pack in entries:
            index.add_pack(pack)
    return index, files, ids


def test_pack_usage_answers_what_the_index_files_answer() -> None:
    """Which packs hold a needed blob (a second location is a fallback: the pack holding it
    must not be deleted while the blob is used), and the bytes listed and used per pack,
    against the same figures computed from the files' merged entries."""
    from lifeboat.repo.consolidate import merge_entries

    rng = random.Random(18)
    for _ in range(50):
        index, files, ids = _random_index(rng)
        needed = IdTable()
        for b in rng.sample(ids, rng.randint(0, len(ids))):
            needed.add(b)

        usage, unneeded = index.pack_usage(needed)

        holding = {p for p, held in usage.items() if held.needed}
        assert holding == {p for p, blobs in index.blobs_by_pack().items() if any(b in needed for b in blobs)}
        assert unneeded == sum(1 for b in index.blob_ids() if b not in needed)
        for pack in merge_entries(files):
            held = usage[pack["id"]]
            assert held.blobs == len(pack["blobs"])
            assert held.listed_bytes == sum(b[3] for b in pack["blobs"])
            firsts = [index.get(b) for b in {b[0] for b in pack["blobs"]} if b in needed]
            assert held.used_bytes == sum(loc.length for loc in firsts if loc.pack == pack["id"])


def test_pack_entries_are_the_merged_entries_of_the_index_files() -> None:
    """What prune writes for a kept pack is every entry the index files list for it, in the
    order consolidation writes them, whatever the number of passes over the table."""
    from lifeboat.repo.consolidate import merge_entries

    rng = random.Random(19)
    for _ in range(50):
        index, files, _ = _random_index(rng)
        merged = {p["id"]: p for p in merge_entries(files)}
        wanted = rng.sample(sorted(merged), rng.randint(1, len(merged)))
        usage, _ = index.pack_usage(IdTable())
        for most in (1, 7, 10_000):
            assert list(index.pack_entries(wanted, usage, most=most)) == [merged[p] for p in wanted]
        files_before, packs_before = dict(index.files), list(index.packs())
        index.settle()  # what a load that decoded files does last: the same index after
        assert list(index.pack_entries(wanted, usage)) == [merged[p] for p in wanted]
        assert index.files == files_before and list(index.packs()) == packs_before


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
