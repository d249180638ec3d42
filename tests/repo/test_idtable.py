"""The packed table of blob ids behind the index and a backup's set of stored blobs
(repo/idtable.py): it answers as a dict would, through its doublings, and holds a million
blobs' locations in a fraction of what the dict took (issue #18: a backup of a million
small files within 200 MB). Pure logic: no repository."""

from __future__ import annotations

import gc
import hashlib
import os
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifeboat.repo import idtable
from lifeboat.repo.format import BlobLocation
from lifeboat.repo.idtable import IdTable
from lifeboat.repo.index import Index

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
