"""A writer may list any ids it likes in an index file it signs, and the recovery side loads
every writer's index files (restore, check, prune). Ids made to share bits must not pile up
in one bucket of the table that holds them (repo/idtable.py): every lookup in that bucket
would scan it, and a load of a million such ids would take days. The bucket comes from a
hash keyed at random per table; the same crafted ids spread over the buckets, whichever bits
they share, in a table read back from its dump too. Counted by bucket occupancy, not by
time; the bound leaves room for the keyed hash's tail, far below a pile-up."""

from __future__ import annotations

import hashlib

import pytest

from lifeboat.repo.idtable import IdTable

CRAFTED = 40_000


def crafted(varying: slice) -> list[str]:
    """Ids equal but for the bytes at ``varying`` (a counter there, the rest fixed)."""
    base = bytearray(hashlib.sha256(b"fixed").digest())
    width = varying.stop - varying.start
    ids = []
    for n in range(CRAFTED):
        raw = bytearray(base)
        raw[varying] = n.to_bytes(width, "little")
        ids.append(bytes(raw).hex())
    return ids


def fullest(table: IdTable) -> int:
    """Records in the fullest bucket."""
    _, buckets = table._table
    return max(len(b) for b in buckets) // table._record


@pytest.mark.parametrize(
    "varying",
    [slice(27, 32), slice(0, 5), slice(14, 19), slice(23, 26)],
    ids=["last", "first", "middle", "top-64-edge"],
)
def test_ids_sharing_all_but_a_few_bytes_spread_over_the_buckets(varying: slice) -> None:
    table = IdTable(2)
    for blob_id in crafted(varying):
        table.put(blob_id, b"\0\0")

    # Random ids: ~40 in the fullest of these 2,048 buckets. Crafted ones, over 800 random
    # keys: at most 140 (the keyed hash's tail on such regular ids). What the attack does
    # without the key: all 40,000 in one bucket.
    assert fullest(table) <= CRAFTED // 40
    pieces: list[bytes] = []
    table.dump(lambda piece: pieces.append(bytes(piece)))
    stream, at = b"".join(pieces), 0

    def read(n: int) -> bytearray:
        nonlocal at
        at += n
        return bytearray(stream[at - n : at])

    loaded = IdTable.load(2, read, CRAFTED)
    more = crafted(slice(varying.start, varying.stop))  # the same ids: all found, none added
    assert all(b in loaded for b in more[:1000]) and len(loaded) == CRAFTED
    assert fullest(loaded) == fullest(table)
