"""Entries held until their tree document is stored cost about their encoded size: a
directory's while the walk is in it, a bucket's until the commit. The commit encodes each
entry once and writes the tree and the parent cache a piece at a time: it was the bucket
backup's peak of memory."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from lifeboat.repo import Repository
from lifeboat.repo.model import Entry
from lifeboat.repo.parents import ParentCache
from lifeboat.repo.trees import TreeStream, document_pieces
from lifeboat.storage import open_storage

ENTRIES = 5_000

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@given(
    st.lists(st.dictionaries(st.text(max_size=6), json_values, max_size=4), max_size=12),
    st.integers(1, 64),
    st.booleans(),
    st.booleans(),
)
def test_the_tree_document_is_cut_where_the_whole_document_is(
    entries: list[dict], size: int, fragment: bool, streamed: bool
) -> None:
    """A whole document (``{"entries": [...]}``), or a shard's part of one (the entries
    alone, comma-separated), from a list (joined at once when it fits in one piece) or
    one entry at a time: the same pieces as slicing the whole, none empty."""
    head, tail = (b"", b"") if fragment else (b'{"entries":[', b"]}")
    whole = head + b",".join(orjson.dumps(e) for e in entries) + tail
    encoded = [orjson.dumps(e) for e in entries]
    for cut in {c for c in (size, len(whole) - 1, len(whole), len(whole) + 1) if c > 0}:  # around one piece
        pieces = list(document_pieces(iter(encoded) if streamed else encoded, cut, head=head, tail=tail))
        assert pieces == [whole[i : i + cut] for i in range(0, len(whole), cut)]


def test_a_whole_tree_commit_holds_little_beside_its_entries(tmp_path: Path) -> None:
    """5,000 objects' entries (~0.5 KB of JSON each): the commit stores their tree and saves
    them as the next backup's parent cache. Before, it held each entry as a dict, the whole
    document, each entry encoded again and the cache's lines joined whole: ~2 KB an entry
    on top of the entries, at the end of the backup when all of them are held."""
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage, chunk_size=64 << 10)  # the tree in small blobs
    repo = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "cache")
    with repo.backup("media", "objects") as session:
        for n in range(ENTRIES):
            key = f"u{n % 500:03d}/{n:06d}.jpg"
            meta = {
                "key": key,
                "version_id": f"v{n:030d}",
                "etag": f'"{n:032x}"',
                "content_type": "image/jpeg",
                "metadata": {"owner": f"user{n % 97}"},
                "tags": None,
                "last_modified": "2026-12-07T10:00:00+00:00",
            }
            session.add_stream(key, io.BytesIO(b"%d" % n), meta=meta, identity=f"{key}|v{n}|{n:032x}")
        tracemalloc.start()
        try:
            held = tracemalloc.get_traced_memory()[0]
            info = session.commit()
            peak = tracemalloc.get_traced_memory()[1] - held
        finally:
            tracemalloc.stop()
    assert info.stats.files == ENTRIES
    assert len(ParentCache(repo.parent_cache("media")).entries) == ENTRIES  # the next backup's parents
    assert peak < ENTRIES * 1024, f"the commit held {peak / ENTRIES:.0f} bytes an entry"  # ~800 now


def test_a_directory_of_many_new_files_holds_about_their_entries() -> None:
    """20,000 new files in one directory: their entries (~150 bytes of JSON each) wait for
    the directory's document. Each was held in orjson's 4 KiB buffer: 82 MB, not 4."""
    stored: list[bytes] = []
    stream = TreeStream(lambda raw: stored.append(raw) or f"{len(stored):064x}", 1 << 20)
    stream.add(Entry(path="flat", type="dir", mode=0o755, mtime_ns=0))
    tracemalloc.start()
    try:
        for n in range(20_000):
            chunk = f"{n:064x}"
            stream.add(Entry(path=f"flat/f{n:07d}.dat", type="file", mode=0o644, size=n, chunks=[chunk]))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    stream.finish()
    assert held < 20_000 * 400, f"{held / 20_000:.0f} bytes held a file"
    entries = orjson.loads(b"".join(stored[:-1]))["entries"]  # the directory's document
    assert [e["path"] for e in entries] == [f"flat/f{n:07d}.dat" for n in range(20_000)]
