"""A table of blob ids, each with a fixed-size value, held as packed bytes.

A million blobs is a million small files. As a dict of hex strings to packed locations the
index took 233 bytes a blob (the id's str alone is 113), 233 MB at a million, past the
200 MB a backup may use (issue #18). Here each id is its 32 raw bytes followed by its value
in one `bytearray` per bucket; the bucket is the id's leading bits (ids are hashes, so the
buckets fill evenly) and a lookup is one `bytearray.find` (C) over a few hundred records:
~62 bytes a blob for the index's locations, 32 for a set of ids. The buckets double past
`_PER_BUCKET` records each, so a lookup stays short whatever the count.

Writers take the table's lock; readers take none: they read the current (bits, buckets)
pair, which a doubling replaces whole.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

ID_SIZE = 32
_START_BITS = 8
_PER_BUCKET = 128  # records a bucket averages before the buckets double


def raw_id(blob_id: str) -> bytes | None:
    """A blob id's 32 bytes (None for anything that is not one: it is in no table). Hex
    digits in either case name the same id; every id stored was checked lowercase first
    (format.is_object_id), and a read checks the blob's bytes against the id asked for."""
    if len(blob_id) != 2 * ID_SIZE:
        return None
    try:
        return bytes.fromhex(blob_id)
    except ValueError:
        return None


class IdTable:
    """Blob id (hex) -> ``value_size`` bytes; a set of ids when ``value_size`` is 0."""

    def __init__(self, value_size: int = 0) -> None:
        self._record = ID_SIZE + value_size
        self._table: tuple[int, list[bytearray]] = (
            _START_BITS,
            [bytearray() for _ in range(1 << _START_BITS)],
        )
        self._count = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def __contains__(self, blob_id: object) -> bool:
        return isinstance(blob_id, str) and self.get(blob_id) is not None

    def get(self, blob_id: str) -> bytes | None:
        """The id's value (b"" in a set), or None when the table does not hold it."""
        raw = raw_id(blob_id)
        if raw is None:
            return None
        bucket, pos = self._find(raw)
        return None if pos < 0 else bytes(bucket[pos + ID_SIZE : pos + self._record])

    def put(self, blob_id: str, value: bytes = b"") -> bool:
        """Sets the id's value; True when the id is new to the table."""
        raw = raw_id(blob_id)
        if raw is None or len(value) != self._record - ID_SIZE:
            raise ValueError(f"not a blob id with a {self._record - ID_SIZE}-byte value: {blob_id[:16]!r}")
        with self._lock:
            bucket, pos = self._find(raw)
            if pos >= 0:
                bucket[pos + ID_SIZE : pos + self._record] = value
                return False
            bucket += raw + value
            self._count += 1
            bits, buckets = self._table
            if self._count > _PER_BUCKET << bits:
                self._table = (bits + 1, self._split(buckets))
            return True

    def add(self, blob_id: str) -> None:
        """``put`` for a set."""
        self.put(blob_id)

    def remove(self, blob_id: str) -> None:
        """Forgets the id (nothing when the table does not hold it)."""
        raw = raw_id(blob_id)
        if raw is None:
            return
        with self._lock:
            bucket, pos = self._find(raw)
            if pos >= 0:
                del bucket[pos : pos + self._record]
                self._count -= 1

    def items(self) -> Iterator[tuple[str, bytes]]:
        """Every id (hex) and its value, in no particular order; a snapshot of the table
        as this call found it."""
        size = self._record
        for bucket in list(self._table[1]):
            held = bytes(bucket)
            for pos in range(0, len(held), size):
                yield held[pos : pos + ID_SIZE].hex(), held[pos + ID_SIZE : pos + size]

    def __iter__(self) -> Iterator[str]:
        return (blob_id for blob_id, _ in self.items())

    def _find(self, raw: bytes) -> tuple[bytearray, int]:
        """The id's bucket and the record's offset in it (-1: not there)."""
        bits, buckets = self._table
        bucket = buckets[int.from_bytes(raw[:4], "big") >> (32 - bits)]
        pos = bucket.find(raw)
        while pos > 0 and pos % self._record:  # matched across two records: look on
            pos = bucket.find(raw, pos + 1)
        return bucket, pos

    def _split(self, buckets: list[bytearray]) -> list[bytearray]:
        """Twice the buckets, each old one's records parted by the next bit of their id."""
        size = self._record
        shift = 31 - (len(buckets).bit_length() - 1)
        doubled: list[bytearray] = []
        for bucket in buckets:
            low, high = bytearray(), bytearray()
            for pos in range(0, len(bucket), size):
                record = bucket[pos : pos + size]
                (high if int.from_bytes(record[:4], "big") >> shift & 1 else low).extend(record)
            doubled += (low, high)
        return doubled
