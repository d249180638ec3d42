"""Blobs stored one after another by one thread sit one after another in one pack (a
restore in that order then reads each pack range as one run), and blobs stored by many
threads at once still each land in exactly one pack and read back as stored."""

from __future__ import annotations

import random
import threading
from itertools import pairwise
from pathlib import Path

from lifeboat.assets.files.tree import backup_paths, restore_snapshot
from lifeboat.repo import Repository
from lifeboat.storage import open_storage


def small_files(root: Path, count: int) -> dict[str, bytes]:
    rng = random.Random(18)
    files = {f"d/{n:04d}.bin": rng.randbytes(rng.randint(500, 4000)) for n in range(count)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_a_walk_of_small_files_fills_one_pack_in_walk_order(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage, chunk_size=64 << 10, pack_size=4 << 20)
    repo = Repository.open(storage, recovery_key=recovery)
    src = tmp_path / "src"
    files = small_files(src, 300)  # ~660 KB: one pack holds them all
    info = backup_paths(repo, "tree", [src])

    fresh = Repository.open(open_storage(f"file://{tmp_path / 'repo'}"), recovery_key=recovery)
    entries = sorted((e for e in fresh.reader(info).entries() if e.type == "file"), key=lambda e: e.path)
    assert len(entries) == len(files)
    locations = fresh.index().get_many([e.chunks[0] for e in entries])
    placed = [locations[e.chunks[0]] for e in entries]
    # taken in turns, the two open packs of a two-core machine held every other file
    assert {loc.pack for loc in placed} == {placed[0].pack}
    offsets = [loc.offset for loc in placed]
    assert offsets == sorted(offsets)
    restore_snapshot(fresh, info, tmp_path / "restored")
    restored = {
        str(p.relative_to(tmp_path / "restored" / "src")): p.read_bytes()
        for p in (tmp_path / "restored").rglob("*.bin")
    }
    assert restored == files


def test_blobs_stored_by_many_threads_at_once_each_land_once(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage, chunk_size=64 << 10, pack_size=256 << 10)
    repo = Repository.open(storage, recovery_key=recovery)
    rng = random.Random(7)
    payloads = [rng.randbytes(rng.randint(200, 9000)) for _ in range(800)]
    ids: dict[int, str] = {}
    start = threading.Barrier(8)

    with repo.backup("many", "files") as session:

        def store(part: range) -> None:
            start.wait()
            for n in part:
                ids[n] = session.add_bytes(f"f{n:04d}", payloads[n]).chunks[0]

        threads = [threading.Thread(target=store, args=(range(k, 800, 8),)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        session.commit()

    fresh = Repository.open(open_storage(f"file://{tmp_path / 'repo'}"), recovery_key=recovery)
    locations = fresh.index().get_many(list(ids.values()))
    assert len(locations) == len(set(ids.values())) == 800
    assert len({loc.pack for loc in locations.values()}) > 1  # 256 KiB packs: several filled
    for n, blob_id in ids.items():
        assert fresh.read_blob(blob_id) == payloads[n]
    spans = sorted((loc.pack, loc.offset, loc.offset + loc.length) for loc in locations.values())
    for (pack_a, _, end_a), (pack_b, start_b, _) in pairwise(spans):
        assert pack_a != pack_b or end_a <= start_b  # no two blobs share bytes of a pack
