"""The packed table of blob ids behind the index and a backup's set of stored blobs
(repo/idtable.py): it answers as a dict would, through its doublings, and holds a million
blobs' locations in a fraction of what the dict took (issue #18: a backup of a million
small files within 200 MB). Pure logic: no repository."""

from __future__ import annotations

import gc
import hashlib
import inspect
import os
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifeboat.repo import idtable
from lifeboat.repo.format import BlobLocation
from lifeboat.repo.idtable import IdTable
from lifeboat.repo.index import Index
from tests.harness.interrupts import interrupted_at

ids = st.binary(min_size=32, max_size=32).map(bytes.hex)
values = st.binary(min_size=3, max_size=3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "remove"]), ids, values), max_size=400))
def test_the_table_answers_as_a_dict_does(ops: list[tuple[str, str, bytes]]) -> None:
    table, model = IdTable(3), {}
    for op, blob_id, value in ops:
        if op == "put":
            assert table.put(blob_id, value) == (blob_id not in model)
            model[blob_id] = value
        else:
            table.remove(blob_id)
            model.pop(blob_id, None)
    assert len(table) == len(model)
    assert dict(table.items()) == model
    assert all(table.get(b) == v for b, v in model.items())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(ids, values), max_size=20), st.lists(st.tuples(ids, values), max_size=600))
def test_setdefault_many_answers_as_dict_setdefault_does(
    before: list[tuple[str, bytes]], batch: list[tuple[str, bytes]]
) -> None:
    """One batch (a pack's blobs, doubling the buckets on the way) keeps what was held and
    returns it, and stores the rest (an id twice in a batch: the first value stays)."""
    table, model = IdTable(3), {}
    for blob_id, value in before:
        table.put(blob_id, value)
        model[blob_id] = value
    expected = []
    for blob_id, value in batch:
        if blob_id in model:
            expected.append((blob_id, model[blob_id]))
        else:
            model[blob_id] = value
    assert table.setdefault_many(batch) == expected
    assert dict(table.items()) == model and len(table) == len(model)


def test_setdefault_many_refuses_what_is_no_blob_id() -> None:
    table = IdTable(3)
    with pytest.raises(ValueError, match="not a blob id"):
        table.setdefault_many([("ab" * 32, b"abc"), ("xyz", b"abc")])
    with pytest.raises(ValueError, match="3"):
        table.setdefault_many([("cd" * 32, b"ab")])


def test_lookups_hold_through_the_doublings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idtable, "_PER_BUCKET", 2)  # a doubling every few puts
    blob_ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
    table = IdTable(4)
    for i, blob_id in enumerate(blob_ids):
        table.put(blob_id, i.to_bytes(4, "big"))
    assert len(table._table[1]) > 1000  # it did double, many times
    assert [table.get(b) for b in blob_ids] == [i.to_bytes(4, "big") for i in range(5000)]
    assert hashlib.sha256(b"absent").hexdigest() not in table


def test_an_id_spanning_two_records_is_not_a_match() -> None:
    """`bytearray.find` may match bytes that straddle two records; only a whole record's id
    counts."""
    first, second = "ab" * 32, "cd" * 32
    straddling = "ab" * 16 + "cd" * 16  # the end of one record and the start of the next
    table = IdTable()  # ids alone: records are adjacent ids
    table.add(first)
    table.add(second)
    assert straddling not in table and first in table and second in table
    assert not table.holds_all([first, straddling]) and table.holds_all([second, first])
    assert not table.put(first) and len(table) == 2


def test_what_is_not_a_blob_id_is_in_no_table() -> None:
    table = IdTable()
    table.add("0" * 64)
    assert "0" * 63 not in table and "zz" * 32 not in table and 7 not in table


def test_a_million_blobs_locations_fit_in_a_fraction_of_what_the_dict_took() -> None:
    """233 bytes a blob before (a dict of hex ids to packed locations: 233 MB at a million
    small files); now about 70, whatever the count."""
    count = 100_000
    gc.collect()
    tracemalloc.start()
    try:
        index = Index()
        for _ in range(count // 2000):
            blobs = [[os.urandom(32).hex(), "data", 7 + i * 100, 100, 80] for i in range(2000)]
            index.add_pack({"id": os.urandom(32).hex(), "blobs": blobs})
            del blobs
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(index) == count
    assert held / count < 90, f"{held / count:.0f} bytes a blob"
    some = next(iter(index._blobs))
    assert isinstance(index.get(some), BlobLocation)


def test_a_doubling_holds_little_more_than_the_table() -> None:
    """A first backup's set of stored blobs grows to a million ids: a doubling that built a
    second table beside the first held the table twice over at its peak."""
    raw_ids = [os.urandom(32).hex() for _ in range(70_000)]
    tracemalloc.start()
    try:
        table = IdTable()
        while len(table) < 65_536:  # 2,048 buckets full: the next id doubles them
            table.add(raw_ids.pop())
        gc.collect()
        tracemalloc.reset_peak()
        table.add(raw_ids.pop())
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = sum(len(b) for b in table._table[1])
    assert len(table._table[1]) == 4096  # it did double
    assert peak - held < size / 10, f"{peak - held} bytes beyond a table of {size}"


def test_readers_never_miss_an_id_while_the_table_doubles() -> None:
    """Readers take no lock: one that looks while a doubling moves records asks again."""
    import threading

    first = [hashlib.sha256(f"a{i}".encode()).hexdigest() for i in range(3000)]
    table = IdTable(2)
    for i, blob_id in enumerate(first):
        table.put(blob_id, i.to_bytes(2, "big"))
    misses: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            misses.extend(b for i, b in enumerate(first) if table.get(b) != i.to_bytes(2, "big"))
            misses.extend(b for b in first if b not in table)  # __contains__ has its own path
            misses.extend(b for b in first if not table.holds_all([b]))  # and holds_all

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for i in range(200_000):  # doublings at 8k, 16k, 32k, ... records
            table.put(hashlib.sha256(f"b{i}".encode()).hexdigest(), b"\0\0")
    finally:
        done.set()
        for reader in readers:
            reader.join()
    assert misses == []


def test_setdefault_many_doubles_the_buckets_midway_and_finds_every_id() -> None:
    first = [(hashlib.sha256(b"%d" % i).hexdigest(), b"%03d" % (i % 1000)) for i in range(20_000)]
    table = IdTable(3)
    assert table.setdefault_many(first) == []  # 20,000 records: the 256 buckets double twice
    again = table.setdefault_many([(b, b"new") for b, _ in first[::7]])
    assert again == first[::7] and len(table) == 20_000
    assert all(table.get(b) == v for b, v in first)


def interrupted_in_split(line_text: str, nth: int, action: Callable[[], None]) -> int:
    """Runs ``action``, which doubles a table, with a tracer that raises KeyboardInterrupt
    (as Ctrl-C would) the ``nth`` time ``IdTable._split`` reaches its line containing
    ``line_text``; how many times it reached that line."""
    lines, first = inspect.getsourcelines(IdTable._split)
    target = first + next(n for n, line in enumerate(lines) if line_text in line)
    reached, interrupted = interrupted_at(IdTable._split.__code__, target, nth, action)
    assert interrupted
    return reached


def test_a_doubling_stopped_midway_leaves_every_id_findable() -> None:
    """A MemoryError or Ctrl-C inside a doubling puts the moved records back: the table
    answers as before and doubles fine next time."""
    table = IdTable(2)
    ids = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(idtable._START_BUCKETS * idtable._PER_BUCKET)]
    for i, blob_id in enumerate(ids):
        table.put(blob_id, i.to_bytes(2, "big"))
    # well inside the doubling's pass over the buckets
    reached = interrupted_in_split(
        ".extend(record)", 3000, lambda: table.put(hashlib.sha256(b"one more").hexdigest(), b"\0\0")
    )
    assert reached == 3000
    assert all(table.get(b) == i.to_bytes(2, "big") for i, b in enumerate(ids))
    for i in range(10_000):  # the next doublings work on a sound table
        table.put(hashlib.sha256(b"later %d" % i).hexdigest(), b"\1\1")
    assert all(table.get(b) == i.to_bytes(2, "big") for i, b in enumerate(ids))


def test_an_id_with_spaces_is_no_id() -> None:
    """bytes.fromhex skips spaces: such an id would be a short record, misaligning its bucket."""
    table = IdTable(2)
    spaced = "ab " * 21 + "a"  # 64 characters, 21 bytes once decoded
    assert len(spaced) == 64
    with pytest.raises(ValueError, match="not a blob id"):
        table.put(spaced, b"\0\0")
    assert spaced not in table and table.get(spaced) is None and len(table) == 0


def test_a_doubling_stopped_between_rebinding_a_bucket_and_counting_it_loses_nothing() -> None:
    """A signal can land between any two bytecodes: right after a bucket was rebound to its
    low half, before the split counted it (a tracer raises there, as Ctrl-C would)."""
    table = IdTable(0)
    full = idtable._PER_BUCKET * idtable._START_BUCKETS  # the next add doubles the buckets
    ids = [hashlib.sha256(b"w%d" % i).hexdigest() for i in range(full)]
    for blob_id in ids:
        table.add(blob_id)
    reached = interrupted_in_split(
        "done += 1", 1, lambda: table.add(hashlib.sha256(b"the one that doubles").hexdigest())
    )
    assert reached == 1 and all(blob_id in table for blob_id in ids)


@settings(max_examples=60, deadline=None)
@given(st.lists(ids, max_size=300), st.lists(st.one_of(ids, st.text(max_size=70)), max_size=40))
def test_missing_names_exactly_the_ids_in_is_false_for(held: list[str], asked: list[str]) -> None:
    """An unchanged backup asks for a file's chunks in one call: the ids answered missing,
    in their order, are those ``in`` is False for (anything that is no blob id included)."""
    table = IdTable()
    for blob_id in held:
        table.add(blob_id)
    assert list(table.missing(asked)) == [a for a in asked if a not in table]
    assert not table.missing([h for h in held])
    # holds_all, the unchanged backup's per-file question, answers as ``missing`` does
    assert table.holds_all(asked) == (not table.missing(asked))
    assert table.holds_all(held) and table.holds_all([])


def test_missing_counts_what_is_not_even_a_string_as_missing() -> None:
    table = IdTable()
    table.add("ab" * 32)
    assert list(table.missing(["ab" * 32, 7, None, "AB" * 16 + " " * 32])) == [  # type: ignore[list-item]
        7,
        None,
        "AB" * 16 + " " * 32,
    ]
    for odd in (7, None, "AB" * 16 + " " * 32, b"\xab" * 32, "zz" * 32, "ab" * 31):
        assert not table.holds_all(["ab" * 32, odd])  # type: ignore[list-item]
    assert table.holds_all(["ab" * 32, "AB" * 32])  # hex digits in either case: the same id


def test_a_reserved_table_holds_its_ids_without_doubling() -> None:
    blob_ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20_000)]
    table = IdTable(4)
    table.reserve(len(blob_ids))
    buckets = len(table._table[1])
    assert buckets * idtable._PER_BUCKET >= len(blob_ids)
    table.setdefault_many((b, i.to_bytes(4, "big")) for i, b in enumerate(blob_ids))
    assert len(table._table[1]) == buckets  # no doubling: every record stayed where it went
    assert [table.get(b) for b in blob_ids] == [i.to_bytes(4, "big") for i in range(20_000)]
    table.reserve(10 * len(blob_ids))  # a table that holds ids is not rebuilt
    assert len(table._table[1]) == buckets and len(table) == 20_000


def test_a_dumped_table_loads_back_answering_alike_and_growing_on() -> None:
    """``dump`` and ``load`` (the whole index kept in the local cache): the same answers
    for every id, none for others, and the loaded table keeps its layout as it grows."""
    table = IdTable(3)
    ids = [hashlib.sha256(b"d%d" % i).hexdigest() for i in range(5000)]
    for i, blob_id in enumerate(ids):
        table.put(blob_id, i.to_bytes(3, "big"))
    pieces: list[bytes] = []
    table.dump(lambda piece: pieces.append(bytes(piece)))
    stream = memoryview(b"".join(pieces))
    at = 0

    def read(n: int) -> bytearray:
        nonlocal at
        at += n
        return bytearray(stream[at - n : at])

    loaded = IdTable.load(3, read, len(ids))

    assert at == len(stream) and len(loaded) == len(ids)
    assert loaded.get_many(ids) == table.get_many(ids)
    assert hashlib.sha256(b"other").hexdigest() not in loaded
    more = [hashlib.sha256(b"m%d" % i).hexdigest() for i in range(20_000)]  # past a doubling
    for blob_id in more:
        loaded.put(blob_id, b"\1\1\1")
    assert loaded.get_many(ids) == table.get_many(ids) and all(b in loaded for b in more)
    with pytest.raises(ValueError):
        IdTable.load(2, lambda n: bytearray(stream[:n]), len(ids))  # another value size
    with pytest.raises(ValueError, match="larger than"):  # more than the caller's bound
        IdTable.load(3, lambda n: bytearray(stream[:n]), len(ids) - 1)


def test_a_backup_knows_a_file_whose_chunks_are_split_between_the_index_and_its_own_run() -> None:
    """KnownBlobs.holds_all asks the index first (an unchanged file's chunks are all there)
    and what the run stored since for the rest: a chunk in neither makes the file read."""
    from lifeboat.repo.backup import KnownBlobs

    indexed, stored, absent = (hashlib.sha256(w).hexdigest() for w in (b"indexed", b"stored", b"absent"))
    index = Index()
    index.add_pack({"id": os.urandom(32).hex(), "blobs": [[indexed, "data", 7, 100, 80]]})
    known = KnownBlobs(index)
    assert known.add_if_new(stored)
    assert known.holds_all([indexed]) and known.holds_all([stored]) and known.holds_all([indexed, stored])
    assert not known.holds_all([indexed, absent]) and not known.holds_all([absent, stored])
    assert KnownBlobs().holds_all([]) and not KnownBlobs().holds_all([indexed])


def test_a_blob_is_new_to_a_backup_once_and_never_when_the_index_lists_it() -> None:
    """KnownBlobs.add_if_new, which decides whether a blob is stored: a blob the index lists
    is never new; one the run has not seen is new once, then known; an empty index (a
    first backup's) and no index at all answer alike."""
    from lifeboat.repo.backup import KnownBlobs

    indexed, fresh = (hashlib.sha256(w).hexdigest() for w in (b"indexed", b"fresh"))
    index = Index()
    index.add_pack({"id": os.urandom(32).hex(), "blobs": [[indexed, "data", 7, 100, 80]]})
    known = KnownBlobs(index)
    assert not known.add_if_new(indexed) and not known.add_if_new(indexed)
    assert known.add_if_new(fresh) and not known.add_if_new(fresh)
    assert known.holds_all([indexed, fresh])
    for empty in (KnownBlobs(Index()), KnownBlobs()):
        assert empty.add_if_new(indexed) and not empty.add_if_new(indexed) and empty.holds_all([indexed])
