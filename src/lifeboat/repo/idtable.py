"""A table of blob ids, each with a fixed-size value, held as packed bytes.

A million blobs is a million small files. As a dict of hex strings to packed locations the
index took 233 bytes a blob (the id's str alone is 113), 233 MB at a million, past the
200 MB a backup may use (issue #18). Here each id is its 32 raw bytes followed by its value
in one `bytearray` per bucket, and a lookup is one `bytearray.find` (C) over a few dozen
records: ~76 bytes a blob for the index's locations, ~40 for a set of ids. The buckets
double past `_PER_BUCKET` records each, so a lookup stays short whatever the count.

Writers take the table's lock; readers take none: they read the current (mask, buckets)
pair, which a doubling replaces whole.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

ID_SIZE = 32
_START_BUCKETS = 256
_PER_BUCKET = 32  # records a bucket averages before the buckets double (a lookup scans ~2 KB)


class IdTable:
    """Blob id (hex) -> ``value_size`` bytes; a set of ids when ``value_size`` is 0. Hex
    digits in either case name the same id: every id stored was checked lowercase first
    (format.is_object_id), and a read checks the blob's bytes against the id asked for."""

    def __init__(self, value_size: int = 0) -> None:
        self._record = ID_SIZE + value_size
        # (mask, buckets): an id's bucket is its hash's low bits (ids are hashes already;
        # Python's keyed hash of the bytes is just the cheapest way to reach their bits,
        # and the table lives in this process only)
        self._table: tuple[int, list[bytearray]] = (
            _START_BUCKETS - 1,
            [bytearray() for _ in range(_START_BUCKETS)],
        )
        self._count = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def __contains__(self, blob_id: object) -> bool:
        found = self._locate(blob_id) if isinstance(blob_id, str) else None
        return found is not None and found[2] >= 0

    def get(self, blob_id: str) -> bytes | None:
        """The id's value (b"" in a set), or None when the table does not hold it."""
        found = self._locate(blob_id)
        if found is None or found[2] < 0:
            return None
        _, bucket, pos = found
        return bytes(bucket[pos + ID_SIZE : pos + self._record])

    def put(self, blob_id: str, value: bytes = b"") -> bool:
        """Sets the id's value; True when the id is new to the table."""
        if len(value) != self._record - ID_SIZE:
            raise ValueError(f"a value of {len(value)} bytes in a table of {self._record - ID_SIZE}")
        with self._lock:
            found = self._locate(blob_id)
            if found is None:
                raise ValueError(f"not a blob id: {blob_id[:16]!r}")
            raw, bucket, pos = found
            if pos >= 0:
                bucket[pos + ID_SIZE : pos + self._record] = value
                return False
            bucket += raw + value
            self._count += 1
            mask, buckets = self._table
            if self._count > _PER_BUCKET * len(buckets):
                self._table = (2 * mask + 1, self._split(buckets))
            return True

    def add(self, blob_id: str) -> None:
        """``put`` for a set."""
        self.put(blob_id)

    def remove(self, blob_id: str) -> None:
        """Forgets the id (nothing when the table does not hold it)."""
        with self._lock:
            found = self._locate(blob_id)
            if found is not None and found[2] >= 0:
                _, bucket, pos = found
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

    def _locate(self, blob_id: str) -> tuple[bytes, bytearray, int] | None:
        """The id's bytes, its bucket and the record's offset in it (-1: not there); None
        for what is not a blob id. One call per lookup: the backup asks once per chunk."""
        if len(blob_id) != 2 * ID_SIZE:
            return None
        try:
            raw = bytes.fromhex(blob_id)
        except ValueError:
            return None
        mask, buckets = self._table
        bucket = buckets[hash(raw) & mask]
        pos = bucket.find(raw)
        while pos > 0 and pos % self._record:  # matched across two records: look on
            pos = bucket.find(raw, pos + 1)
        return raw, bucket, pos

    def _split(self, buckets: list[bytearray]) -> list[bytearray]:
        """Twice the buckets: bucket i's records go to i or i + n by the next bit of their hash."""
        size, n = self._record, len(buckets)
        doubled = buckets + [bytearray() for _ in range(n)]
        for i, bucket in enumerate(buckets):
            low, high = bytearray(), doubled[i + n]
            for pos in range(0, len(bucket), size):
                record = bucket[pos : pos + size]
                (high if hash(bytes(record[:ID_SIZE])) & n else low).extend(record)
            doubled[i] = low
        return doubled
