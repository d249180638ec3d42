"""A table of blob ids, each with a fixed-size value, held as packed bytes.

A million blobs is a million small files. As a dict of hex strings to packed locations the
index took 233 bytes a blob (the id's str alone is 113), 233 MB at a million, past the
200 MB a backup may use (issue #18). Here each id is its 32 raw bytes followed by its value
in one `bytearray` per bucket, and a lookup is one `bytearray.find` (C) over a few dozen
records: ~76 bytes a blob for the index's locations, ~40 for a set of ids. The buckets
double past `_PER_BUCKET` records each, so a lookup stays short whatever the count.

Writers take the table's lock; readers take none. A doubling rebinds the buckets one at a
time, in place (building a second table beside the first held the table twice over: ~40 MB
more at a million ids, the most a first backup held), and a removal shifts records, so
writers that move records count ``_moves`` up before and after: a reader that saw it change
(or odd) reads again under the lock. A record found is never torn: no bucket's bytes are
rewritten while they move, only rebound.
"""

from __future__ import annotations

import secrets
import struct
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

ID_SIZE = 32
_START_BUCKETS = 256
_PER_BUCKET = 32  # records a bucket averages before the buckets double (a lookup scans ~2 KB)
_MAX_RESERVED_BUCKETS = 1 << 20  # reserve() stops here (~60 MB of empty buckets); growth goes on
_FOLD = 8 * ID_SIZE - 64  # bucket_of: the id's top 64 bits folded into its lowest, and the
# product's bits from here up choose the bucket
_DUMP = struct.Struct("<32sIQI")  # key, value size, records, buckets (then their lengths, bytes)

A = TypeVar("A")  # what a lock-free read is asked
R = TypeVar("R")  # what it answers


def _raw_id(blob_id: str) -> bytes:
    """A hex blob id's 32 bytes (ValueError for anything else: fromhex alone skips spaces)."""
    raw = bytes.fromhex(blob_id) if len(blob_id) == 2 * ID_SIZE else b""
    if len(raw) != ID_SIZE:
        raise ValueError(f"not a blob id: {blob_id[:16]!r}")
    return raw


class IdTable:
    """Blob id (hex) -> ``value_size`` bytes; a set of ids when ``value_size`` is 0. Hex
    digits in either case name the same id: every id stored was checked lowercase first
    (format.is_object_id), and a read checks the blob's bytes against the id asked for."""

    def __init__(self, value_size: int = 0) -> None:
        self._record = ID_SIZE + value_size
        # An id's bucket comes from a hash keyed at random for this table (``bucket_of``),
        # not Python's hash of bytes, which is keyed anew in every process: the layout can
        # be kept on disk and read back as it is (``dump``). Keyed all the same: a writer
        # may list any ids it likes in a signed index file, and ids made to share bits
        # must not pile up in one bucket of another host's table.
        self._key = secrets.randbits(8 * ID_SIZE) | 1
        # (mask, buckets)
        self._table: tuple[int, list[bytearray]] = (
            _START_BUCKETS - 1,
            [bytearray() for _ in range(_START_BUCKETS)],
        )
        self._count = 0
        self._lock = threading.Lock()
        self._moves = 0  # odd while records move; see the module's docstring

    def __len__(self) -> int:
        return self._count

    def reserve(self, records: int) -> None:
        """Buckets for about ``records`` ids from the start, while the table is empty: a
        loaded index would otherwise double its buckets once per doubling of its size,
        moving every record each time."""
        with self._lock:
            if self._count:
                return
            buckets = _START_BUCKETS
            while buckets * _PER_BUCKET < records and buckets < _MAX_RESERVED_BUCKETS:
                buckets *= 2
            self._table = (buckets - 1, [bytearray() for _ in range(buckets)])

    def __contains__(self, blob_id: object) -> bool:
        # get() without copying the value out: an unchanged backup asks once per chunk
        if not isinstance(blob_id, str):
            return False
        found = self._lock_free(self._locate, blob_id)
        return found is not None and found[2] >= 0

    def _lock_free(self, read: Callable[[A], R], arg: A) -> R:
        """``read(arg)`` without the lock; again under it if records moved meanwhile (see
        the module's docstring)."""
        moves = self._moves
        result = read(arg)
        if moves & 1 or self._moves != moves:  # records moved meanwhile: ask again, alone
            with self._lock:
                result = read(arg)
        return result

    def missing(self, blob_ids: Sequence[str]) -> Sequence[str]:
        """The ids the table does not hold, in their order: ``in`` for a file's chunks in
        one call (an unchanged backup asks for every file's)."""
        return [b for b, value in zip(blob_ids, self.get_many(blob_ids), strict=True) if value is None]

    def holds_all(self, blob_ids: Sequence[str]) -> bool:
        """Whether the table holds every one of the ids: ``missing`` without a value copied
        out or a list built, stopping at the first id it lacks (an unchanged backup asks
        once per file, a million times for a million files: ``missing`` was a fifth of it)."""
        return self._lock_free(self._holds_all, blob_ids)

    def _holds_all(self, blob_ids: Sequence[str]) -> bool:
        size, key, from_bytes, fromhex = self._record, self._key, int.from_bytes, bytes.fromhex
        mask, buckets = self._table
        for blob_id in blob_ids:  # _values without the values
            try:
                raw = fromhex(blob_id) if len(blob_id) == 2 * ID_SIZE else b""
            except (TypeError, ValueError):  # not a str, not hex
                return False
            if len(raw) != ID_SIZE:
                return False
            x = from_bytes(raw, "little")
            bucket = buckets[((x ^ (x >> _FOLD)) * key >> _FOLD) & mask]
            pos = bucket.find(raw)
            while pos > 0 and pos % size:  # matched across two records: look on
                pos = bucket.find(raw, pos + 1)
            if pos < 0:
                return False
        return True

    def get_many(self, blob_ids: Sequence[str]) -> list[bytes | None]:
        """``get`` of each, in one call (a restore looks up every chunk it plans)."""
        return self._lock_free(self._values, blob_ids)

    def _values(self, blob_ids: Sequence[str]) -> list[bytes | None]:
        # _locate inlined: a call per id cost as much as the lookup
        size, key, from_bytes = self._record, self._key, int.from_bytes
        mask, buckets = self._table
        values: list[bytes | None] = []
        for blob_id in blob_ids:
            try:
                raw = bytes.fromhex(blob_id) if len(blob_id) == 2 * ID_SIZE else b""
            except (TypeError, ValueError):  # not a str, not hex
                raw = b""
            if len(raw) != ID_SIZE:
                values.append(None)
                continue
            x = from_bytes(raw, "little")  # bucket_of, inlined: a call cost as much as the hash
            bucket = buckets[((x ^ (x >> _FOLD)) * key >> _FOLD) & mask]
            pos = bucket.find(raw)
            while pos > 0 and pos % size:  # matched across two records: look on
                pos = bucket.find(raw, pos + 1)
            values.append(bytes(bucket[pos + ID_SIZE : pos + size]) if pos >= 0 else None)
        return values

    def get(self, blob_id: str) -> bytes | None:
        """The id's value (b"" in a set), or None when the table does not hold it."""
        return self._lock_free(self._value, blob_id)

    def _value(self, blob_id: str) -> bytes | None:
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
            self._append(raw, bucket, value)
            return True

    def setdefault_many(self, records: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """Stores each id's value unless the table holds the id, under one lock; the (id, value
        held) of those it held."""
        held = self.setdefault_raw_many((_raw_id(blob_id), value) for blob_id, value in records)
        return [(raw.hex(), value) for raw, value, _ in held]

    def setdefault_raw_many(
        self, records: Iterable[tuple[bytes | memoryview, bytes]]
    ) -> list[tuple[bytes, bytes, bytes]]:
        """``setdefault_many`` with each id as its 32 raw bytes; the (id, value held, value
        offered) of those it held. One lookup a record, inlined: a million-blob index is
        loaded through here (``get`` then ``put`` took two lookups and two locks a blob)."""
        held: list[tuple[bytes, bytes, bytes]] = []
        size, value_size, key, from_bytes = (
            self._record,
            self._record - ID_SIZE,
            self._key,
            int.from_bytes,
        )
        with self._lock:
            for raw, value in records:
                if len(value) != value_size:
                    raise ValueError(f"a value of {len(value)} bytes in a table of {value_size}")
                if len(raw) != ID_SIZE:
                    raise ValueError("a blob id that is not 32 bytes")
                mask, buckets = self._table
                x = from_bytes(raw, "little")
                bucket = buckets[((x ^ (x >> _FOLD)) * key >> _FOLD) & mask]
                pos = bucket.find(raw)
                while pos > 0 and pos % size:  # matched across two records: look on
                    pos = bucket.find(raw, pos + 1)
                if pos >= 0:
                    held.append((bytes(raw), bytes(bucket[pos + ID_SIZE : pos + size]), value))
                elif self._count < _PER_BUCKET * (mask + 1):
                    bucket += bytes(raw) + value  # _append without its call and doubling
                    # check; one append, so that a reader never finds the id without its value
                    self._count += 1
                else:
                    self._append(bytes(raw), bucket, value)
        return held

    def _append(self, raw: bytes, bucket: bytearray, value: bytes) -> None:
        """A new record (under the lock), doubling the buckets when they are full."""
        bucket += raw + value
        self._count += 1
        mask, buckets = self._table
        if self._count > _PER_BUCKET * len(buckets):
            self._moves += 1
            try:
                self._split(buckets)
                self._table = (2 * mask + 1, buckets)
            finally:
                self._moves += 1

    def add(self, blob_id: str) -> None:
        """``put`` for a set."""
        self.put(blob_id)

    def remove(self, blob_id: str) -> None:
        """Forgets the id (nothing when the table does not hold it)."""
        with self._lock:
            found = self._locate(blob_id)
            if found is not None and found[2] >= 0:
                _, bucket, pos = found
                self._moves += 1
                del bucket[pos : pos + self._record]
                self._moves += 1
                self._count -= 1

    def items(self) -> Iterator[tuple[str, bytes]]:
        """Every id (hex) and its value, in no particular order; a snapshot of the table
        as this call found it."""
        return ((raw.hex(), value) for raw, value in self.records())

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """``items`` with each id as its 32 raw bytes: a pass over every record (prune's) then
        makes no hex string per id."""
        size = self._record
        with self._lock:  # not halfway through a doubling
            buckets = list(self._table[1])
        for bucket in buckets:
            held = bytes(bucket)
            for pos in range(0, len(held), size):
                yield held[pos : pos + ID_SIZE], held[pos + ID_SIZE : pos + size]

    def holds_raw(self, raw: bytes) -> bool:
        """``in`` for an id given as its 32 raw bytes (from another table's ``records``)."""
        if len(raw) != ID_SIZE:
            return False
        moves = self._moves
        pos = self._find(raw)[1]
        if moves & 1 or self._moves != moves:  # records moved meanwhile: ask again, alone
            with self._lock:
                pos = self._find(raw)[1]
        return pos >= 0

    def __iter__(self) -> Iterator[str]:
        return (blob_id for blob_id, _ in self.items())

    def dump(self, write: Callable[[bytes | bytearray], object]) -> None:
        """The table as it is laid out, to ``write`` piece by piece (``load`` reads it back
        without placing a record: a million ids in tens of milliseconds, not seconds)."""
        with self._lock:
            mask, buckets = self._table
            key = self._key.to_bytes(ID_SIZE, "little")
            write(_DUMP.pack(key, self._record - ID_SIZE, self._count, mask + 1))
            write(array("Q", map(len, buckets)).tobytes())
            for bucket in buckets:
                write(bucket)

    @classmethod
    def load(cls, value_size: int, read: Callable[[int], bytearray], most: int) -> IdTable:
        """A table ``dump`` wrote of at most ``most`` records, from ``read(n)`` (exactly n
        bytes, or ValueError); ValueError for one that does not add up or claims more (what
        it claims is checked before anything that large is made). Its records are not
        checked: the caller authenticates what it reads (a tagged cache file)."""
        key, stored_size, count, n = _DUMP.unpack(read(_DUMP.size))
        table = cls(value_size)
        if stored_size != value_size or not key[0] & 1 or n < 1 or n & (n - 1):
            raise ValueError("not a table of this layout")
        if count > most or n > max(_MAX_RESERVED_BUCKETS, 2 * most):
            raise ValueError("a table larger than its caller's bound")
        lengths = array("Q")
        lengths.frombytes(read(8 * n))
        if sum(lengths) != count * table._record or any(length % table._record for length in lengths):
            raise ValueError("a table whose buckets do not hold its records")
        table._key, table._count = int.from_bytes(key, "little"), count
        table._table = (n - 1, [read(length) for length in lengths])
        return table

    def bucket_of(self, raw: bytes | bytearray) -> int:
        """The hash whose low bits choose an id's bucket (more of them as the buckets double):
        multiply-shift under this table's odd 256-bit key (bits 192 and up of key * x, for
        x the id with its top 64 bits folded into its lowest, so that every bit of the id
        counts). Without the key, two ids share the bucket of a table of 2^m buckets with a
        chance of about 2^-m (Dietzfelbinger et al., 1997), whichever ids they are."""
        x = int.from_bytes(raw, "little")
        return (x ^ (x >> _FOLD)) * self._key >> _FOLD

    def _locate(self, blob_id: str) -> tuple[bytes, bytearray, int] | None:
        """The id's bytes, its bucket and the record's offset in it (-1: not there); None
        for what is not a blob id. One call per lookup: the backup asks once per chunk."""
        if len(blob_id) != 2 * ID_SIZE:
            return None
        try:
            raw = bytes.fromhex(blob_id)
        except ValueError:
            return None
        if len(raw) != ID_SIZE:  # fromhex skips spaces: a short record would shift its bucket
            return None
        bucket, pos = self._find(raw)
        return raw, bucket, pos

    def _find(self, raw: bytes) -> tuple[bytearray, int]:
        """The bucket of a 32-byte id and the offset of its record there (-1: not there)."""
        mask, buckets = self._table
        bucket = buckets[self.bucket_of(raw) & mask]
        pos = bucket.find(raw)
        while pos > 0 and pos % self._record:  # matched across two records: look on
            pos = bucket.find(raw, pos + 1)
        return bucket, pos

    def _split(self, buckets: list[bytearray]) -> None:
        """Doubles the buckets in place: bucket i's records go to i or i + n by the next bit
        of their window, one bucket at a time (the old one is dropped as soon as it is split)."""
        size, n = self._record, len(buckets)
        buckets.extend(bytearray() for _ in range(n))
        done = 0
        bucket = buckets[0]
        try:
            for i in range(n):
                bucket, low, high = buckets[i], bytearray(), buckets[i + n]
                for pos in range(0, len(bucket), size):
                    record = bucket[pos : pos + size]
                    upper = self.bucket_of(record[:ID_SIZE]) & n
                    (high if upper else low).extend(record)
                buckets[i] = low
                done += 1
        except BaseException:  # MemoryError, Ctrl-C: the old mask must find every record again
            if done < n and buckets[done] is not bucket:
                done += 1  # stopped between rebinding this bucket and counting it: split too
            for i in range(done):
                buckets[i] += buckets[i + n]
            del buckets[n:]  # a half-filled high bucket's records are still in their old one
            raise
