"""Restores read packs in a few large ranges: against a real S3 server (SeaweedFS) a
multi-file restore comes back byte for byte with about one GET per pack, not one per chunk,
and a chunk needed twice is not fetched twice."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from lifeboat.assets.files.tree import backup_paths, restore_snapshot
from lifeboat.errors import IntegrityError
from lifeboat.repo import Repository
from lifeboat.repo import reader as reader_module
from lifeboat.repo.format import BlobLocation
from lifeboat.repo.index import Index
from lifeboat.repo.packread import PACK_HEADER_LEN, PackRanges, Span, plan_spans, span_numbers
from lifeboat.repo.reader import _pack_order
from lifeboat.storage import open_storage
from lifeboat.storage.base import Storage
from tests.harness.packs import damage_chunk


class CountingStorage:
    """The real storage, with every ranged read of a pack recorded."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner
        self.pack_gets: list[tuple[str, int, int | None]] = []
        self._lock = threading.Lock()

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name.startswith("data/"):
            with self._lock:
                self.pack_gets.append((name, offset, length))
        return self._inner.get(name, offset, length)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


def write_tree(root: Path) -> dict[str, bytes]:
    rng = random.Random(18)
    files: dict[str, bytes] = {}
    shared = rng.randbytes(300 << 10)
    for n in range(12):  # incompressible, several chunks each at a 64 KiB chunk size
        files[f"big/{n:02d}.bin"] = rng.randbytes(rng.randint(200 << 10, 600 << 10))
    for n in range(40):
        files[f"small/{n:02d}.txt"] = f"file {n}\n".encode() * rng.randint(1, 400)
    files["dup/a.bin"] = shared
    files["dup/b.bin"] = shared  # same chunks as a.bin: stored once, read once
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_s3_restore_reads_each_pack_about_once(
    tmp_path: Path, seaweed: Any, make_seaweed_bucket: Callable[..., str]
) -> None:
    bucket = make_seaweed_bucket(object_lock=False)
    storage = open_storage(f"s3://{bucket}/repo", endpoint_url=seaweed.endpoint)
    _, _, recovery = Repository.create(storage, chunk_size=64 << 10, pack_size=1 << 20)
    src = tmp_path / "src"
    files = write_tree(src)
    writer = Repository.open(storage, recovery_key=recovery)
    info = backup_paths(writer, "tree", [src])

    counting = CountingStorage(storage)
    repo = Repository.open(counting, recovery_key=recovery)
    chunks = {c for e in repo.reader(info).entries() for c in e.chunks}
    packs = {repo.index().get(c).pack for c in chunks}  # type: ignore[union-attr]
    counting.pack_gets.clear()
    target = tmp_path / "restored"
    stats = restore_snapshot(repo, info, target)

    restored = {str(p.relative_to(target / "src")): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert restored == files
    assert stats.files == len(files)
    assert len(packs) >= 4 and len(chunks) >= 5 * len(packs)  # one GET per chunk would be far more
    assert len(counting.pack_gets) <= len(packs) + 2, counting.pack_gets
    assert len(set(counting.pack_gets)) == len(counting.pack_gets), counting.pack_gets  # nothing read twice
    storage.close()


def test_ranges_from_s3_are_fetched_three_ahead_and_each_once(
    seaweed: Any, make_seaweed_bucket: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A range read from S3 may be 16 MiB: seven fetched ahead of the readers, as from a
    local disk (1 MiB ranges there), took a 200 MB bucket restore from a repository on
    SeaweedFS to 234-243 MB of memory. Three are fetched ahead; read by 32 threads, every
    chunk comes back and no range is fetched twice."""
    bucket = make_seaweed_bucket(object_lock=False)
    storage = open_storage(f"s3://{bucket}/repo", endpoint_url=seaweed.endpoint)
    _, _, recovery = Repository.create(storage, chunk_size=64 << 10, pack_size=1 << 20)
    writer = Repository.open(storage, recovery_key=recovery)
    write_tree(tmp_path / "src")
    info = backup_paths(writer, "tree", [tmp_path / "src"])
    counting = CountingStorage(storage)
    repo = Repository.open(counting, recovery_key=recovery)
    chunks = list(dict.fromkeys(c for e in repo.reader(info).entries() for c in e.chunks))
    expected = [repo.read_blob(c) for c in chunks]
    fetched: list[int] = []
    fetch = PackRanges._fetch

    def counted(self: PackRanges, n: int) -> Any:
        fetched.append(n)
        return fetch(self, n)

    monkeypatch.setattr(PackRanges, "_fetch", counted)
    counting.pack_gets.clear()
    with PackRanges(repo, chunks) as ranges:
        ahead = len(fetched)  # before any reader asked
        with ThreadPoolExecutor(32) as pool:
            got = list(pool.map(ranges.get, chunks))
        spans = len(ranges.spans)

    assert got == expected
    assert ranges.resident == 8  # what readers ask for is held as from a local disk
    assert spans > 4 and ahead == 3, (spans, ahead)
    assert sorted(fetched) == list(range(spans)) and len(counting.pack_gets) == spans  # each once
    storage.close()


def loc(pack: str, offset: int, length: int) -> BlobLocation:
    return BlobLocation(pack=pack, type="data", offset=offset, length=length, raw_length=length)


def test_plan_merges_neighbours_splits_far_ranges_and_orders_by_first_need() -> None:
    base = PACK_HEADER_LEN
    locations = {
        "a1": loc("A", base, 100),
        "a2": loc("A", base + 100, 100),
        "a3": loc("A", base + 5000, 100),  # beyond the gap: a second span
        "b1": loc("B", base, 100),
    }
    order = ["b1", "a3", "a1", "a2", "a1"]
    spans, span_of = plan_spans(locations, order, gap=1000)
    assert [(s.pack, s.start, s.end) for s in spans] == [
        ("B", 0, base + 100),  # needed first; starts at 0 so the header comes with it
        ("A", base + 5000, base + 5100),
        ("A", 0, base + 200),
    ]
    assert span_of == {"b1": 0, "a3": 1, "a1": 2, "a2": 2}
    assert [s.uses for s in spans] == [1, 1, 3]  # a1 twice: served from the one span
    whole, _ = plan_spans(locations, order, gap=1 << 20)
    assert [(s.pack, s.start, s.end) for s in whole] == [("B", 0, base + 100), ("A", 0, base + 5100)]


def test_tampered_pack_is_named_on_the_coalesced_path(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage, chunk_size=64 << 10, pack_size=1 << 20)
    src = tmp_path / "src"
    write_tree(src)
    repo = Repository.open(storage, recovery_key=recovery)
    info = backup_paths(repo, "tree", [src])
    entry = next(e for e in repo.reader(info).entries() if e.path.endswith("big/03.bin"))
    damaged = damage_chunk(repo, entry.chunks[1], tmp_path / "repo")

    fresh = Repository.open(open_storage(f"file://{tmp_path / 'repo'}"), recovery_key=recovery)
    with pytest.raises(IntegrityError) as caught:
        restore_snapshot(fresh, info, tmp_path / "restored")
    assert str(caught.value) == f"chunk {entry.chunks[1][:16]} in {damaged}: failed authentication"


def test_open_files_stay_bounded_and_deferred_files_restore_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage, chunk_size=64 << 10, pack_size=1 << 20)
    src = tmp_path / "src"
    files = write_tree(src)
    repo = Repository.open(storage, recovery_key=recovery)
    info = backup_paths(repo, "tree", [src])
    entries = [e for e in repo.reader(info).entries() if e.type == "file"]
    span_of = span_numbers(repo, [c for e in entries for c in e.chunks])

    order = _pack_order(entries, span_of)
    assert sorted(order) == sorted((f, i) for f, e in enumerate(entries) for i in range(len(e.chunks)))
    left = [len(e.chunks) for e in entries]
    started: set[int] = set()
    most = 0
    for f, _ in order:
        started.add(f)
        left[f] -= 1
        most = max(most, sum(1 for g in started if left[g] > 0))
    assert most > 2  # the pack layout interleaves files: the cap below has work to do

    monkeypatch.setattr(reader_module, "OPEN_FILES", 2)
    capped = _pack_order(entries, span_of)
    assert sorted(capped) == sorted(order)
    left = [len(e.chunks) for e in entries]
    started.clear()
    for f, _ in capped:
        started.add(f)
        left[f] -= 1
        assert sum(1 for g in started if left[g] > 0) <= 2
    target = tmp_path / "restored"
    restore_snapshot(repo, info, target)
    restored = {str(p.relative_to(target / "src")): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert restored == files


def test_a_lagging_span_is_needed_at_its_first_unserved_read() -> None:
    # One worker writes a batch of small files from one span while others race through
    # the big files' spans: the lagging span is still needed next, and evicting it (as a
    # global "reads served" position once did under load) read its range again and again.
    lagging = Span("A", 0, 100, uses=4, needed_at=[0, 1, 2, 3])
    ahead = Span("B", 0, 100, uses=2, needed_at=[40, 41])
    lagging.uses -= 2  # two of its four reads served, however many other spans served since
    assert lagging.next_need() == 2
    assert max([lagging, ahead], key=Span.next_need) is ahead  # the one to evict
    ahead.uses = 0
    assert ahead.next_need() == float("inf")  # nothing left to serve: dropped first


def test_a_blob_listed_twice_keeps_every_location_and_the_failed_one_goes_last() -> None:
    """Pure index logic: a second listing of a blob is kept as a fallback, ``demote``
    moves a location that failed authentication behind the others, and dropping a pack
    keeps the blob's other location instead of forgetting the blob."""
    b, c = "b" * 64, "c" * 64  # blob ids
    index = Index()
    index.add_pack({"id": "p1", "blobs": [[b, "data", 10, 20, 5]]})
    index.add_pack({"id": "p2", "blobs": [[b, "data", 30, 40, 7], [c, "data", 0, 9, 3]]})
    index.add_pack({"id": "p1", "blobs": [[b, "data", 10, 20, 5]]})  # the same listing again
    first, second = BlobLocation("p1", 10, 20, 5, "data"), BlobLocation("p2", 30, 40, 7, "data")
    assert index.locations(b) == [first, second] and index.listed_elsewhere(b)
    assert not index.listed_elsewhere(c) and not index.demote(c, index.locations(c)[0])
    assert index.demote(b, first) and index.get(b) == second
    assert index.demote(b, first) and index.get(b) == second  # a second reader's demotion
    assert index.locations(b) == [second, first]
    assert {p: sorted(ids) for p, ids in index.blobs_by_pack().items()} == {"p1": [b], "p2": [b, c]}
    index.drop_packs(["p2"])
    assert index.locations(b) == [first] and c not in index
    assert index.blobs_by_pack() == {"p1": [b]} and list(index.packs()) == ["p1"]


def test_dropping_a_pack_that_only_lists_other_locations_keeps_the_first_ones() -> None:
    """A pack whose every blob was listed first by another pack (a forged index read after
    the genuine ones, say) has only fallback locations; prune forgetting it (it does not
    exist) must drop those and leave the first locations alone."""
    b = "b" * 64
    index = Index()
    index.add_pack({"id": "p1", "blobs": [[b, "data", 10, 20, 5]]})
    index.add_pack({"id": "forged", "blobs": [[b, "data", 0, 20, 5]]})
    index.drop_packs(["forged"])
    assert index.locations(b) == [BlobLocation("p1", 10, 20, 5, "data")]
    assert list(index.packs()) == ["p1"]


def test_a_plan_told_of_the_order_it_is_asked_in_follows_it_and_ignores_an_order_of_other_blobs(
    tmp_path: Path,
) -> None:
    """Blobs planned in an order that alternates between packs, then asked for pack by pack
    (as a dir:// restore sends them): ``expect`` gives each range the positions at which
    the new order needs it (what eviction goes by); an order of other blobs changes
    nothing; every blob still comes back as stored."""
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage, chunk_size=64 << 10, pack_size=16 << 10)
    repo = Repository.open(storage, recovery_key=recovery)
    rng = random.Random(9)
    data: dict[str, bytes] = {}
    with repo.backup("tree", "files") as session:
        for n in range(48):  # 16 KiB packs of 8 blobs: six packs
            content = rng.randbytes(2000)
            data[session.add_bytes(f"f{n:02d}", content).chunks[0]] = content
        session.commit()
    fresh = Repository.open(open_storage(f"file://{tmp_path / 'repo'}"), recovery_key=recovery)
    stored = list(data)
    alternating = [stored[p * 8 + k] for k in range(8) for p in range(6)]  # one blob of each pack in turn

    with PackRanges(fresh, alternating) as ranges:
        assert len(ranges.spans) == 6
        planned = [list(span.needed_at) for span in ranges.spans]
        by_pack = sorted(alternating, key=lambda b: ranges.span_of[b])
        ranges.expect([*by_pack[:-1], stored[0]])  # not the planned blobs: ignored
        assert [span.needed_at for span in ranges.spans] == planned
        ranges.expect(by_pack)
        assert [span.needed_at for span in ranges.spans] == [list(range(n * 8, n * 8 + 8)) for n in range(6)]
        assert ranges.get_many(by_pack) == [data[b] for b in by_pack]


def test_small_files_among_large_ones_do_not_make_ranges_be_read_twice(
    tmp_path: Path, seaweed: Any, make_seaweed_bucket: Callable[..., str]
) -> None:
    """A restore's small files go to the writer process in batches; one filling up over the
    whole restore kept the ranges of its first files held, and the large files' ranges were
    fetched, dropped and fetched again in the room left (a 2 GB tree read 200 packs in 230
    GETs). Each range is now read once however the small files are spread."""
    rng = random.Random(57)
    files: dict[str, bytes] = {}
    for n in range(1200):  # more than the writer's threshold, spread among the large files
        files[f"mixed/{n:04d}.txt"] = rng.randbytes(rng.randint(200, 1200))
        if n % 40 == 0:
            files[f"mixed/{n:04d}.bin"] = rng.randbytes(rng.randint(300 << 10, 500 << 10))
    src = tmp_path / "src"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    bucket = make_seaweed_bucket(object_lock=False)
    storage = open_storage(f"s3://{bucket}/repo", endpoint_url=seaweed.endpoint)
    _, _, recovery = Repository.create(storage, chunk_size=64 << 10, pack_size=1 << 20)
    info = backup_paths(Repository.open(storage, recovery_key=recovery), "tree", [src])

    counting = CountingStorage(storage)
    repo = Repository.open(counting, recovery_key=recovery)
    packs = {repo.index().get(c).pack for e in repo.reader(info).entries() for c in e.chunks}  # type: ignore[union-attr]
    counting.pack_gets.clear()
    target = tmp_path / "restored"
    restore_snapshot(repo, info, target)

    restored = {str(p.relative_to(target / "src")): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert restored == files
    assert len(packs) >= 8
    assert len(set(counting.pack_gets)) == len(counting.pack_gets), counting.pack_gets  # nothing read twice
    storage.close()
