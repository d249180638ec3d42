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
from lifeboat.repo.index import PackEntry
from lifeboat.repo.packer import Packer
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


def test_threads_waiting_for_the_one_open_pack_each_get_it_and_every_blob_is_packed(tmp_path: Path) -> None:
    """Sixteen threads storing through one open pack: each one that finds it taken waits
    and is woken when it is given back (none is left waiting: the join would time out),
    and every blob is listed by exactly one uploaded pack."""
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage, chunk_size=64 << 10, pack_size=1 << 20)
    repo = Repository.open(storage, recovery_key=recovery)
    uploaded: list[PackEntry] = []
    listed = threading.Lock()

    def on_uploaded(entry: PackEntry, _size: int) -> None:
        with listed:
            uploaded.append(entry)

    packer = Packer(repo.storage, repo.keyring, 64 << 10, on_uploaded, open_packs=1)
    rng = random.Random(3)
    blobs = {rng.randbytes(32).hex(): rng.randbytes(rng.randint(100, 3000)) for _ in range(1600)}
    ids = list(blobs)
    start = threading.Barrier(16)

    def store(part: list[str]) -> None:
        start.wait()
        for blob_id in part:
            packer.add(blob_id, "data", blobs[blob_id], len(blobs[blob_id]))

    threads = [threading.Thread(target=store, args=(ids[k::16],), daemon=True) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    packer.flush()
    packer.close()
    packed = [blob[0] for entry in uploaded for blob in entry["blobs"]]
    assert sorted(packed) == sorted(ids)
    assert len(uploaded) > 10  # 64 KiB packs: many filled and uploaded while threads waited


def test_an_abort_never_waits_for_the_open_packs_an_interrupted_add_may_hold(tmp_path: Path) -> None:
    """An interrupt landing between an ``add``'s calls can leave an open pack taken for
    good; the abort that follows indexes what was uploaded and returns, without waiting
    for it (every open pack is held here, as if by such adds)."""
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage, chunk_size=64 << 10, pack_size=16 << 10)
    repo = Repository.open(storage, recovery_key=recovery)
    rng = random.Random(5)
    stored: list[str] = []
    outcome: list[BaseException] = []

    def interrupted_backup() -> None:
        try:
            with repo.backup("tree", "files") as session:
                for n in range(43):  # 16 KiB packs of 8: five uploaded, one open at the interrupt
                    stored.append(session.add_bytes(f"f{n}", rng.randbytes(2000)).chunks[0])
                packer = session.writer.packer
                for _ in range(packer._slots_total):
                    packer._permits.get()
                raise KeyboardInterrupt
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=interrupted_backup, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the abort waited for a pack no add will give back"
    assert len(outcome) == 1 and isinstance(outcome[0], KeyboardInterrupt)
    fresh = Repository.open(open_storage(f"file://{tmp_path / 'repo'}"), recovery_key=recovery)
    assert fresh.snapshots() == []
    indexed = fresh.index().get_many(stored)
    assert 0 < len(indexed) < len(stored)  # the uploaded packs indexed, the open ones dropped
    for blob_id in indexed:
        assert len(fresh.read_blob(blob_id)) == 2000
