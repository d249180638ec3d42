"""The blob index: which pack holds each blob. Index files are immutable; many may exist.

Each is sealed and signed by its writer (repo/sealed.py): a writer reads back its own, the
recovery side everybody's. An index that is unsigned, forged or signed by a writer the
registry does not allow is ignored for every decision (it can never misdirect a restore)
and named by ``check``."""

from __future__ import annotations

import gc
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from lifeboat import clock
from lifeboat.crypto.signed import ObjectType
from lifeboat.crypto.writers import Refusal
from lifeboat.errors import AlreadyExistsError, ConfigError, IntegrityError, NotFoundError
from lifeboat.memory import release_free_memory
from lifeboat.private import private_dir, write_private
from lifeboat.repo.format import (
    BLOB_DATA,
    BLOB_TREE,
    INDEX_MAGIC,
    BlobLocation,
    blob_entries_valid,
    index_name,
    is_object_id,
)
from lifeboat.repo.idtable import ID_SIZE, IdTable
from lifeboat.repo.local_cache import CacheSeal
from lifeboat.repo.sealed import MetadataCodec, Unopened
from lifeboat.repo.trust import SignatureCheck, Trust
from lifeboat.repo.whole_index import KEEP_FROM, REWRITE_SHARE, WholeIndex, keep_whole, read_whole
from lifeboat.storage.base import Storage

NAMESPACE = "index/"
_T = TypeVar("_T")
PackEntry = dict[str, Any]  # {"id": pack id, "blobs": [[id, type, offset, length, raw_length]]}


_TYPES = (BLOB_DATA, BLOB_TREE)
# A blob's first location as held in memory, after its id in an IdTable: pack number
# (into Index._pack_ids), offset, length, plaintext length, type number. 61 bytes a blob
# with its id, where a dict of hex ids to BlobLocations took 233 (issue #18).
_LOCATION = struct.Struct("<IQQQB")
_TYPE_NUMBERS = {name: number for number, name in enumerate(_TYPES)}
_PACK_NUMBER = struct.Struct("<I")  # a _LOCATION's first field
# Index.pack_entries: blobs whose records one pass over the table gathers (~61 bytes each
# while gathered; a heavy prune of a million blobs peaked at 226 MB writing the kept index
# with 250,000 a pass, 213 MB with this; a pass over the table is ~0.4 s)
ENTRIES_PER_PASS = 100_000


@dataclass
class PackUsage:
    """What the index lists in one pack, against the blobs still needed (prune's plan)."""

    blobs: int = 0  # locations listed in the pack
    listed_bytes: int = 0  # their lengths
    needed: int = 0  # locations of needed blobs (0: nothing here to copy)
    used_bytes: int = 0  # lengths of the needed blobs whose first location is here


class Index:
    """In-memory union of index files, thread-safe.

    A blob may be listed at more than one location: two backups that stored the same chunk
    concurrently, or an index file a compromised writer signed pointing other writers' blob
    ids at the wrong bytes (any authorised writer may sign an index, and a blob id does not
    say whose it is). The first location listed is tried first; readers that find it fails
    authentication fall back to the others (``locations``) and ``demote`` it, and every
    location counts as holding the blob for what prune keeps and retention locks."""

    def __init__(self) -> None:
        self._blobs = IdTable(_LOCATION.size)  # blob id -> its first location (_LOCATION)
        self._pack_ids: list[str] = []  # pack number -> pack id
        self._pack_numbers: dict[str, int] = {}
        self._alternates: dict[str, list[BlobLocation]] = {}  # blob id -> its other locations
        self._packs: dict[str, None] = {}  # the packs listed (in the order first listed)
        self._tree_ends: dict[str, int] = {}  # pack id -> where its last tree blob ends
        self.files: dict[str, list[str]] = {}  # index file name -> pack ids it lists
        self.file_blobs: dict[str, int] = {}  # index file name -> how many blobs it lists
        self.damaged: dict[str, str] = {}  # index file name -> problem
        self.refused: dict[str, str] = {}  # index file name -> why no reader may use it
        self.sealed: dict[str, bytes] = {}  # index file name -> the other writer that sealed it
        self.judged: dict[str, dict[str, Any]] = {}  # index file name -> DecodedIndex.judged()
        self._lock = threading.Lock()

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self._blobs

    def reserve(self, blobs: int) -> None:
        """Room for about ``blobs`` blobs before any is added (see IdTable.reserve)."""
        self._blobs.reserve(blobs)

    def missing(self, blob_ids: Sequence[str]) -> Sequence[str]:
        """The ids of these the index does not list, in their order."""
        return self._blobs.missing(blob_ids)

    def holds_all(self, blob_ids: Sequence[str]) -> bool:
        """Whether the index lists every one of these ids."""
        return self._blobs.holds_all(blob_ids)

    def __len__(self) -> int:
        return len(self._blobs)

    def get(self, blob_id: str) -> BlobLocation | None:
        """Where a blob is stored (the location to try first), or None."""
        packed = self._blobs.get(blob_id)
        return None if packed is None else self._unpacked(packed)

    def get_many(self, blob_ids: Sequence[str]) -> dict[str, BlobLocation]:
        """``get`` of each in one call: the blobs the index lists, by id."""
        unpack, pack_ids, new = _LOCATION.unpack, self._pack_ids, tuple.__new__
        found = {}
        for blob_id, packed in zip(blob_ids, self._blobs.get_many(blob_ids), strict=True):
            if packed is not None:
                number, offset, length, raw_length, btype = unpack(packed)
                # tuple.__new__, not BlobLocation(...): the NamedTuple's own __new__ is a
                # Python function, a tenth of the lookups' time for a million chunks
                found[blob_id] = new(
                    BlobLocation, (pack_ids[number], offset, length, raw_length, _TYPES[btype])
                )
        return found

    def _pack_number(self, pack_id: str) -> int:
        number = self._pack_numbers.get(pack_id)
        if number is None:
            number = self._pack_numbers[pack_id] = len(self._pack_ids)
            self._pack_ids.append(pack_id)
        return number

    def _packed(self, loc: BlobLocation) -> bytes:
        number = self._pack_number(loc.pack)
        return _LOCATION.pack(number, loc.offset, loc.length, loc.raw_length, _TYPES.index(loc.type))

    def _unpacked(self, packed: bytes) -> BlobLocation:
        number, offset, length, raw_length, btype = _LOCATION.unpack(packed)
        return BlobLocation(self._pack_ids[number], offset, length, raw_length, _TYPES[btype])

    def locations(self, blob_id: str) -> list[BlobLocation]:
        """Every location listed for a blob, the one to try first first."""
        with self._lock:
            first = self.get(blob_id)
            return [] if first is None else [first, *self._alternates.get(blob_id, ())]

    def listed_elsewhere(self, blob_id: str) -> bool:
        """Whether the blob has more than one location (cheap: no list is built)."""
        return blob_id in self._alternates

    def demote(self, blob_id: str, failed: BlobLocation) -> bool:
        """Moves a location that failed authentication behind the blob's others; False when
        there is no other location to try."""
        with self._lock:
            others = self._alternates.get(blob_id)
            if not others:
                return False
            if self.get(blob_id) == failed:  # another reader may have demoted it already
                self._blobs.put(blob_id, self._packed(others.pop(0)))
                others.append(failed)
            return True

    def packs(self) -> dict[str, None]:
        """The ids of the packs the index lists."""
        return self._packs

    def blobs_by_pack(self) -> dict[str, list[str]]:
        """Each listed pack's blob ids, in no set order (every location: a blob listed in
        two packs is in both). Built on each call, for whole-repository work (check, prune,
        repack): a backup or restore never holds every id as a string."""
        found: dict[str, list[str]] = {pack_id: [] for pack_id in self._packs}
        with self._lock:
            for blob_id, packed in self._blobs.items():
                found[self._pack_ids[_LOCATION.unpack(packed)[0]]].append(blob_id)
            for blob_id, others in self._alternates.items():
                for loc in others:
                    found[loc.pack].append(blob_id)
        return found

    def pack_usage(self, needed: IdTable) -> tuple[dict[str, PackUsage], int]:
        """What each listed pack holds against the ``needed`` blobs, and how many of the blobs
        the index knows are not needed: one pass over the table, no entry held per blob (a
        prune of a million blobs held ~370 MB reading every index file again for this).
        Every location counts, as every index file listing it does: a blob listed in two
        packs is held by both."""
        usage = [PackUsage() for _ in self._pack_ids]
        unneeded = 0
        unpack, holds = _LOCATION.unpack, needed.holds_raw
        with self._lock:
            for raw, packed in self._blobs.records():
                number, _, length, _, _ = unpack(packed)
                held = usage[number]
                held.blobs += 1
                held.listed_bytes += length
                if holds(raw):
                    held.needed += 1
                    held.used_bytes += length  # its first location: where readers find it
                else:
                    unneeded += 1
            for blob_id, others in self._alternates.items():
                wanted = blob_id in needed
                for loc in others:
                    held = usage[self._pack_numbers[loc.pack]]
                    held.blobs += 1
                    held.listed_bytes += loc.length
                    held.needed += wanted
        return {pack_id: usage[self._pack_numbers[pack_id]] for pack_id in self._packs}, unneeded

    def pack_entries(
        self, pack_ids: Sequence[str], usage: Mapping[str, PackUsage], most: int = ENTRIES_PER_PASS
    ) -> Iterator[PackEntry]:
        """The index entries of these packs, in their order: every location listed in each,
        sorted (what ``consolidate.merge_entries`` makes of the index files listing it).
        One pass over the table per ``most`` blobs of them (``usage``: ``pack_usage``'s
        counts), each pack's records held as raw bytes until it is handed out: what prune
        writes again costs memory in proportion to ``most``, not to the repository."""
        for group in cut_by_count(pack_ids, lambda p: usage[p].blobs if p in usage else 0, most):
            yield from self._entries_of(group)

    def _entries_of(self, pack_ids: list[str]) -> Iterator[PackEntry]:
        numbers = {self._pack_numbers[p]: p for p in pack_ids if p in self._pack_numbers}
        records: dict[str, bytearray] = {p: bytearray() for p in pack_ids}
        unpack_number = _PACK_NUMBER.unpack_from
        with self._lock:
            for raw, packed in self._blobs.records():
                pack_id = numbers.get(unpack_number(packed)[0])
                if pack_id is not None:
                    records[pack_id] += raw + packed
            others = [(b, loc) for b, locs in self._alternates.items() for loc in locs if loc.pack in records]
        extra: dict[str, list[list[Any]]] = {}
        for blob_id, loc in others:
            extra.setdefault(loc.pack, []).append([blob_id, loc.type, loc.offset, loc.length, loc.raw_length])
        record = ID_SIZE + _LOCATION.size
        for pack_id in pack_ids:
            held = records.pop(pack_id)
            blobs = extra.pop(pack_id, [])
            for pos in range(0, len(held), record):
                _, offset, length, raw_length, btype = _LOCATION.unpack_from(held, pos + ID_SIZE)
                blobs.append([held[pos : pos + ID_SIZE].hex(), _TYPES[btype], offset, length, raw_length])
            del held
            blobs.sort()
            yield {"id": pack_id, "blobs": blobs}

    def layout(self, judged: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """What ``restored`` needs besides the blob table (whole_index.py), with ``judged``:
        each index file's judgement inputs (``DecodedIndex.judged``)."""
        with self._lock:
            return {
                "pack_ids": self._pack_ids,
                "packs": list(self._packs),
                "tree_ends": self._tree_ends,
                "alternates": {b: [list(loc) for loc in locs] for b, locs in self._alternates.items()},
                "files": {
                    name: {"packs": packs, "blobs": self.file_blobs[name], "judged": judged[name]}
                    for name, packs in self.files.items()
                },
            }

    def blob_table(self) -> IdTable:
        """The table of first locations, for whole_index.py to keep."""
        return self._blobs

    def drop_table(self) -> None:
        """Empties the table of first locations (``_read_back``: the index is then unused)."""
        with self._lock:
            self._blobs = IdTable(_LOCATION.size)

    @classmethod
    def restored(cls, meta: dict[str, Any], table: IdTable) -> Index:
        """The index ``layout`` and ``blob_table`` described (KeyError, TypeError or
        ValueError for a layout that does not hold together)."""
        index = cls()
        index._blobs = table
        index._pack_ids = [str(p) for p in meta["pack_ids"]]
        index._pack_numbers = {p: n for n, p in enumerate(index._pack_ids)}
        index._packs = dict.fromkeys(str(p) for p in meta["packs"])
        index._tree_ends = {str(p): int(end) for p, end in meta["tree_ends"].items()}
        index._alternates = {
            str(b): [BlobLocation(str(p), int(o), int(n), int(r), str(t)) for p, o, n, r, t in locs]
            for b, locs in meta["alternates"].items()
        }
        for name, kept in meta["files"].items():
            index.files[str(name)] = [str(p) for p in kept["packs"]]
            index.file_blobs[str(name)] = int(kept["blobs"])
            index.judged[str(name)] = dict(kept["judged"])
        if not index._packs.keys() <= index._pack_numbers.keys():
            raise ValueError("a pack listed without its number")
        return index

    def tree_end(self, pack_id: str) -> int:
        """Where the pack's last tree blob ends (0: it holds none), to read its trees at once."""
        return self._tree_ends.get(pack_id, 0)

    def add_pack(self, pack: PackEntry) -> None:
        """Adds a pack's blob table."""
        for pack_id, tree_end, records in PackedEntries.of([pack]).each():
            self.add_packed(pack_id, tree_end, records)

    def add_packed(self, pack_id: str, tree_end: int, records: memoryview) -> None:
        """Adds a pack's blob table as ``PackedEntries`` holds it: each record goes into the
        table as it is, behind the pack's number."""
        with self._lock:
            self._packs[pack_id] = None
            number = self._pack_number(pack_id)
            if tree_end:
                self._tree_ends[pack_id] = max(self._tree_ends.get(pack_id, 0), tree_end)
            prefix = _PACK_NUMBER.pack(number)
            held = self._blobs.setdefault_raw_many(
                (records[pos : pos + ID_SIZE], prefix + records[pos + ID_SIZE : pos + RECORD_SIZE])
                for pos in range(0, len(records), RECORD_SIZE)
            )
            for raw, first, offered in held:
                if first == offered:
                    continue  # the same listing again (index files overlap after merges)
                blob_id = raw.hex()
                loc = self._unpacked(offered)
                others = self._alternates.setdefault(blob_id, [])
                if loc not in others:
                    others.append(loc)

    def drop_packs(self, pack_ids: Iterable[str]) -> None:
        """Forgets packs (vanished or pruned); a blob listed elsewhere too keeps that location."""
        dropped = {p for p in pack_ids if p in self._packs}
        if not dropped:
            return
        with self._lock:
            numbers = {self._pack_numbers[p] for p in dropped if p in self._pack_numbers}
            firsts = [b for b, packed in self._blobs.items() if _LOCATION.unpack(packed)[0] in numbers]
            for blob_id in firsts:
                others = [o for o in self._alternates.pop(blob_id, []) if o.pack not in dropped]
                if others:
                    self._blobs.put(blob_id, self._packed(others.pop(0)))
                else:
                    self._blobs.remove(blob_id)
                if others:
                    self._alternates[blob_id] = others
            for blob_id in [
                b for b, locs in self._alternates.items() if any(o.pack in dropped for o in locs)
            ]:
                others = [o for o in self._alternates.pop(blob_id) if o.pack not in dropped]
                if others:
                    self._alternates[blob_id] = others
            for pack_id in dropped:
                del self._packs[pack_id]
                self._tree_ends.pop(pack_id, None)

    def settle(self) -> None:
        """Makes anew what is kept per pack and per file from decoded index files (pack ids,
        file names, counts), then collects. Each of those objects was allocated among the
        entries of the file it came from, and once those were freed it alone kept the
        allocator from returning the memory around it: a million blobs loaded file by file
        held ~30 MB more than the same index read back whole (issue #18: an unchanged
        backup of a million files peaked past 200 MB). The collection also empties the
        interpreter's free lists, which pinned more of it."""
        with self._lock:
            fresh = {p: (p + " ")[:-1] for p in self._pack_ids}  # a new str, not the same one
            self._pack_ids = [fresh[p] for p in self._pack_ids]
            self._pack_numbers = {fresh[p]: n for p, n in self._pack_numbers.items()}
            self._packs = dict.fromkeys(fresh[p] for p in self._packs)
            self._tree_ends = {fresh[p]: int(str(end)) for p, end in self._tree_ends.items()}
            self.files = {(n + " ")[:-1]: [fresh.get(p, p) for p in ids] for n, ids in self.files.items()}
            self.file_blobs = {(n + " ")[:-1]: int(str(count)) for n, count in self.file_blobs.items()}
        del fresh
        gc.collect()

    def blob_ids(self) -> set[str]:
        """Every blob id the index knows."""
        return set(self._blobs)


def encode_index(
    packs: list[PackEntry], codec: MetadataCodec, time: datetime | None = None
) -> tuple[str, bytes]:
    """An index file's id and stored bytes for these pack entries: sealed and signed by this
    handle's writer (or the root key), dated (``time``, by default now) so readers apply the
    time rule (repo/sealed.py); MAC'd plaintext in a legacy repository."""
    payload: dict[str, Any] = {"version": 1, "packs": packs}
    if codec.seal:
        payload["time"] = (time or clock.now()).isoformat()
    return codec.encode(ObjectType.INDEX, NAMESPACE, INDEX_MAGIC, payload, None)


# An index file lists at most this many blobs (restic's figure; a pack with more stands
# alone): a reader decodes one file whole before merging it, ~17 MB at this size.
INDEX_FILE_BLOBS = 50_000


def index_parts(packs: Iterable[PackEntry], limit: int = INDEX_FILE_BLOBS) -> Iterator[list[PackEntry]]:
    """The pack entries in order, cut into groups of at most ``limit`` blobs each (a pack
    larger than that alone); each group handed out as soon as it is complete, so entries
    made on demand (``Index.pack_entries``) are never all held at once."""
    return cut_by_count(packs, lambda pack: len(pack["blobs"]), limit)


def cut_by_count(items: Iterable[_T], count: Callable[[_T], int], limit: int) -> Iterator[list[_T]]:
    """The items in order, in groups whose ``count`` adds up to at most ``limit`` (an item
    counting more than that alone), each handed out as soon as it is complete."""
    group: list[_T] = []
    total = 0
    for item in items:
        n = count(item)
        if group and total + n > limit:
            yield group
            group, total = [], 0
        group.append(item)
        total += n
    if group:
        yield group


def write_index(
    storage: Storage, packs: Iterable[PackEntry], codec: MetadataCodec, cache: IndexCache | None = None
) -> dict[str, int]:
    """Store the index of these packs, in files of at most INDEX_FILE_BLOBS blobs; returns
    each file's id and how many blobs it lists. A file's name is its content's id, so
    finding it taken means the same index file is already there (two backups recovering the
    same orphan packs, a prune or a consolidation killed before its deletes): that is
    success, not a conflict. Each file stored is put in ``cache`` as ``decode_index`` would
    read it back: the next load of this host takes it from there, not from the repository
    (a million-file backup's next load fetched, opened and decoded 40 files of 50,000 blobs)."""
    written: dict[str, int] = {}
    for part in index_parts(packs, INDEX_FILE_BLOBS):
        time = clock.now() if codec.seal else None
        index_id, data = encode_index(part, codec, time)
        try:
            storage.put(index_name(index_id), data)
        except AlreadyExistsError:
            # The name is the SHA-256 of these very bytes: a concurrent writer (a shard that
            # found this writer's packs as orphans and indexed them) stored the same index.
            pass
        if cache is not None and valid_packs(part):  # kept only as a read would take it
            decoded = DecodedIndex(PackedEntries.of(part), codec.own_check(), time, codec.seal)
            cache.put(index_name(index_id), decoded)
        written[index_id] = sum(len(p["blobs"]) for p in part)
    return written


# A blob of an index file as the cache keeps it and the table takes it: its raw id, then a
# _LOCATION without the pack number (offset, length, plaintext length, type number).
_REST = struct.Struct("<QQQB")
RECORD_SIZE = ID_SIZE + _REST.size
_CACHED_META = struct.Struct("<I")  # the length of a cached file's JSON part


@dataclass(frozen=True)
class PackedEntries:
    """An index file's pack entries as fixed-size records: what the cache keeps and the
    blob table takes as they are. As lists of Python objects, a file of 50,000 blobs held
    ~35 MB until it was merged, the peak of an unchanged backup of a million files (issue
    #18); as records, 2.9 MB. ``packs``: each pack's id, blob count and where its last tree
    blob ends; ``records``: their blobs, pack after pack, in the order listed."""

    packs: list[tuple[str, int, int]]
    records: bytes

    @classmethod
    def of(cls, entries: Iterable[PackEntry]) -> PackedEntries:
        """From checked entries (``valid_packs``)."""
        packs: list[tuple[str, int, int]] = []
        out = bytearray()
        rest, fromhex = _REST.pack, bytes.fromhex
        for pack in entries:
            blobs = pack["blobs"]
            tree_end = max((o + n for _, t, o, n, _ in blobs if t == BLOB_TREE), default=0)
            packs.append((pack["id"], len(blobs), tree_end))
            for blob_id, btype, offset, length, raw_length in blobs:
                out += fromhex(blob_id)
                out += rest(offset, length, raw_length, _TYPE_NUMBERS[btype])
        return cls(packs, bytes(out))

    @property
    def blobs(self) -> int:
        """How many blobs the file lists."""
        return len(self.records) // RECORD_SIZE

    def each(self) -> Iterator[tuple[str, int, memoryview]]:
        """Each pack's id, tree end and records."""
        view, pos = memoryview(self.records), 0
        for pack_id, count, tree_end in self.packs:
            end = pos + count * RECORD_SIZE
            yield pack_id, tree_end, view[pos:end]
            pos = end

    def entries(self) -> list[PackEntry]:
        """The entries as the index file lists them."""
        return list(self.each_entry())

    def each_entry(self) -> Iterator[PackEntry]:
        """``entries``, one pack at a time (as lists only while it is in use)."""
        for pack_id, _, records in self.each():
            blobs = []
            for pos in range(0, len(records), RECORD_SIZE):
                offset, length, raw_length, btype = _REST.unpack_from(records, pos + ID_SIZE)
                blobs.append([records[pos : pos + ID_SIZE].hex(), _TYPES[btype], offset, length, raw_length])
            yield {"id": pack_id, "blobs": blobs}

    def cached(self, judged: dict[str, Any]) -> bytes:
        """The cached form with the file's judgement inputs: ``u32 n ‖ n bytes of JSON ‖
        records``."""
        meta = orjson.dumps({**judged, "packs": self.packs})
        return _CACHED_META.pack(len(meta)) + meta + self.records

    @classmethod
    def from_cached(cls, data: bytes) -> tuple[PackedEntries, dict[str, Any]]:
        """The entries and judgement inputs ``cached`` made (ValueError, KeyError or
        TypeError for what does not add up: the tag says who wrote it, not which version)."""
        (length,) = _CACHED_META.unpack_from(data)
        meta = orjson.loads(data[_CACHED_META.size : _CACHED_META.size + length])
        packs = [(str(p), int(n), int(end)) for p, n, end in meta.pop("packs")]
        records = data[_CACHED_META.size + length :]
        if sum(n for _, n, _ in packs) * RECORD_SIZE != len(records):
            raise ValueError("a cached index whose records do not add up")
        return cls(packs, records), meta


@dataclass(frozen=True)
class DecodedIndex:
    """An index file opened: its entries, what its trailer proves, when it claims to have
    been written, and whether it was sealed (a plaintext one is of the earlier layout)."""

    entries: PackedEntries
    check: SignatureCheck
    time: datetime | None
    sealed: bool

    def judged(self) -> dict[str, Any]:
        """What the registry judges it by, as cached (``IndexCache``, whole_index.py)."""
        return {
            "check": self.check.to_json(),
            "time": self.time.isoformat() if self.time else None,
            "sealed": self.sealed,
        }

    @classmethod
    def from_judged(cls, data: object, entries: PackedEntries) -> DecodedIndex | None:
        """From its cached judgement inputs (None when unusable)."""
        if not isinstance(data, dict):
            return None
        check = SignatureCheck.from_json(data.get("check"))
        try:
            time = datetime.fromisoformat(data["time"]) if data.get("time") else None
        except (TypeError, ValueError):
            return None
        if check is None or not isinstance(data.get("sealed"), bool):
            return None
        return cls(entries, check, time, data["sealed"])


def decode_index(data: bytes, codec: MetadataCodec, name: str) -> DecodedIndex | Unopened:
    """The pack entries of an index file and its signature check, or ``Unopened`` (another
    writer's sealed index, or an unsigned sealed one). IntegrityError when damaged, renamed
    (the id is the SHA-256 of the bytes before the trailer) or of an unknown layout."""
    opened = codec.decode(
        ObjectType.INDEX, NAMESPACE, INDEX_MAGIC, name.rsplit("/", 1)[-1], data, _no_asset, name
    )
    if isinstance(opened, Unopened):
        return opened
    packs = opened.payload.get("packs")
    if not valid_packs(packs):
        raise IntegrityError(f"{name} is damaged (malformed pack entries)")
    time = None
    if opened.sealed:
        try:
            time = datetime.fromisoformat(str(opened.payload["time"]))
        except (KeyError, ValueError):
            raise IntegrityError(f"{name} is damaged (malformed time)") from None
        if time.tzinfo is None:
            raise IntegrityError(f"{name} is damaged (time without a zone)")
    return DecodedIndex(PackedEntries.of(packs), opened.check, time, opened.sealed)  # type: ignore[arg-type]


def _no_asset(payload: dict[str, Any]) -> str | None:
    return None  # an index belongs to no single asset: its signature names none


def judge_index(name: str, decoded: DecodedIndex, codec: MetadataCodec, trust: Trust | None) -> str | None:
    """Why no reader may use this index (None: it may). A plaintext index without a trailer
    is the earlier layout: accepted in a legacy repository and in one created before sealed
    indexes, refused where every index must be signed."""
    if trust is None:
        return None
    if not decoded.sealed and decoded.check.refusal is Refusal.UNSIGNED and not codec.require_signed_indexes:
        return None
    verdict = trust.judge(decoded.check, None, decoded.time or clock.now())
    if verdict:
        return None
    who = verdict.writer or "an unknown writer"
    if verdict.reason == Refusal.BAD_SIGNATURE.value and verdict.writer:
        who = f"a writer claiming to be {verdict.writer}"
    short = name.rsplit("/", 1)[-1][:12]
    return f"index file {short} by {who} refused: {verdict.reason}; ignored by every reader"


def valid_packs(packs: object) -> bool:
    """Every pack entry well formed, so loading and reading can trust its fields."""
    if not isinstance(packs, list):
        return False
    for pack in packs:
        if not isinstance(pack, dict) or not is_object_id(pack.get("id")):
            return False
        if not blob_entries_valid(pack.get("blobs")):
            return False
    return True


# The label cached index entries are tagged under: the checks ``decode_index`` made on them,
# and the form they are kept in (2: ``PackedEntries``)
CACHE_FORM = "index-checked-2:"


class IndexCache:
    """Index files are immutable, so a local copy never goes stale (restic's cache idea).
    It keeps the decoded entries with the signature check; the registry is applied afresh.

    Only entries ``decode_index`` accepted, or that this host encoded and stored itself
    (``write_index``), are cached, and the tag (a key only key holders derive) covers them
    under ``CACHE_FORM``: a copy whose tag holds is one this version
    checked, and is not checked again (the column checks were a third of loading a
    million-blob index). A version that checks more changes ``CACHE_FORM``, and copies
    tagged before are read from the repository and checked once more."""

    def __init__(self, directory: Path | None, seal: CacheSeal) -> None:
        self.directory = directory
        self.seal = seal

    def get(self, name: str) -> DecodedIndex | None:
        """A cached decoded index file, or None."""
        if self.directory is None:
            return None
        path = self.directory / name.replace("/", "_")
        try:
            raw = self.seal.open(CACHE_FORM + name, path.read_bytes())
            if raw is None:
                return None
            entries, judged = PackedEntries.from_cached(raw)
        except (OSError, ValueError, KeyError, TypeError, struct.error):
            return None
        return DecodedIndex.from_judged(judged, entries)

    def whole(self, usable: Callable[[dict[str, Any]], bool]) -> WholeIndex | None:
        """The whole index kept after an earlier load, if ``usable`` (whole_index.py)."""
        if self.directory is None:
            return None
        return read_whole(self.directory, self.seal, CACHE_FORM, usable, _LOCATION.size)

    def keep(self, whole: WholeIndex) -> bool:
        """Keeps the whole index for the next load; whether it was kept."""
        return self.directory is not None and keep_whole(self.directory, self.seal, CACHE_FORM, whole)

    def holds(self, name: str) -> bool:
        """Whether a copy is kept (``get`` still checks it)."""
        return self.directory is not None and (self.directory / name.replace("/", "_")).exists()

    def put(self, name: str, decoded: DecodedIndex) -> None:
        """Caches a decoded index file (private, under the cache dir)."""
        if self.directory is None:
            return
        try:
            private_dir(self.directory)
            data = self.seal.seal(CACHE_FORM + name, decoded.entries.cached(decoded.judged()))
            write_private(self.directory / name.replace("/", "_"), data)
        except (OSError, ConfigError):  # a read-only state dir: private_dir says ConfigError
            pass  # the cache is an optimisation; the repository is the truth


@dataclass(frozen=True)
class IndexRead:
    """One index file as a reader sees it: usable entries, or why not (exactly one set;
    all None: it vanished meanwhile)."""

    entries: PackedEntries | None = None
    problem: str | None = None  # damaged or of an unknown layout
    refused: str | None = None  # unsigned, forged, an unauthorised writer: ignored, reported
    sealed_by: bytes | None = None  # another writer's: this key cannot open it
    decoded: DecodedIndex | None = None  # with ``entries``: the file they came from

    @property
    def packs(self) -> list[PackEntry] | None:
        """The usable entries as lists (None: not usable)."""
        return self.entries.entries() if self.entries is not None else None


def read_index_file(
    storage: Storage,
    codec: MetadataCodec,
    cache: IndexCache,
    trust: Trust | None,
    name: str,
    fetched: bytes | None = None,
) -> IndexRead:
    """One index file, through the cache, judged against the registry. ``fetched``: its
    stored bytes, when the caller read them ahead."""
    decoded = cache.get(name)
    if decoded is None:
        try:
            result = decode_index(fetched if fetched is not None else storage.get(name), codec, name)
        except IntegrityError as exc:
            return IndexRead(problem=str(exc))
        except NotFoundError:
            return IndexRead()  # removed by a concurrent prune
        if isinstance(result, Unopened):
            if result.refusal is not None:
                return IndexRead(
                    refused=f"index file {name.rsplit('/', 1)[-1][:12]} refused: {result.refusal.value}"
                )
            if trust is not None and trust.writer_name(result.signer) is None:
                reason = Refusal.UNKNOWN_WRITER.value
                return IndexRead(refused=f"index file {name.rsplit('/', 1)[-1][:12]} refused: {reason}")
            return IndexRead(sealed_by=result.signer)
        decoded = result
        cache.put(name, decoded)
    refusal = judge_index(name, decoded, codec, trust)
    if refusal is not None:
        return IndexRead(refused=refusal)
    return IndexRead(entries=decoded.entries, decoded=decoded)


# Stored index bytes fetched ahead of the one being decoded. Files are fetched in parallel
# (a GET's latency) but decoded one at a time: a decoded file is ~700 bytes a blob until it
# is merged (~35 MB for a full one), and decoding two or more at once held a third of a
# million-file backup's peak. Decoding is CPU under the GIL: in parallel it gained nothing.
AHEAD_BYTES = 8 << 20


def _fetched_in_order(
    pool: ThreadPoolExecutor,
    fetch: Callable[[str], bytes | None],
    files: list[tuple[str, int]],
    ahead: int,
) -> Iterator[tuple[str, bytes | None]]:
    """``pool.map(fetch)`` over (name, stored size) that fetches at most ``ahead`` files,
    and about ``AHEAD_BYTES``, ahead of the one the caller decodes."""
    pending: deque[tuple[str, int, Future[bytes | None]]] = deque()
    held = 0
    for name, size in files:
        pending.append((name, size, pool.submit(fetch, name)))
        held += size
        while pending and (len(pending) > ahead or held > AHEAD_BYTES):
            done, size_done, future = pending.popleft()
            held -= size_done
            yield done, future.result()
    while pending:
        done, _, future = pending.popleft()
        yield done, future.result()


# Stored bytes of an index file per blob it lists, about (a 32-byte random id each, the rest
# compressed): 45 measured; a lower figure reserves a little more than the index needs.
INDEX_BYTES_PER_BLOB = 40


def load_index(
    storage: Storage, codec: MetadataCodec, cache: IndexCache, trust: Trust | None = None, workers: int = 8
) -> Index:
    """The whole index from every index file in storage this handle may use (cached where
    possible): refused files are left out and named in ``refused``, damaged ones in
    ``damaged``, other writers' sealed ones in ``sealed``."""
    index, decoded = _load_index(storage, codec, cache, trust, workers)
    if decoded >= KEEP_FROM:  # here, once nothing of the decoded files is left (Index.settle)
        index.settle()
    return index


def _read_back(index: Index, cache: IndexCache, usable: Callable[[dict[str, Any]], bool]) -> Index | None:
    """The index just kept whole, read back in its place (``_load_index``); None when what is
    kept is no longer it (another process kept another meanwhile). ``index`` is unusable
    afterwards: its table is dropped and the pages returned before the whole is read."""
    files, blobs = index.files.keys() - set(), len(index)
    notes = index.damaged, index.refused, index.sealed
    index.drop_table()
    release_free_memory()
    again, _ = _kept_index(cache, usable)
    if again.files.keys() != files or len(again) != blobs:
        return None
    again.damaged, again.refused, again.sealed = notes
    return again


def _load_index(
    storage: Storage,
    codec: MetadataCodec,
    cache: IndexCache,
    trust: Trust | None,
    workers: int,
    read_back: bool = True,
) -> tuple[Index, int]:
    """``load_index``, and how many blobs came from index files decoded (not kept whole).
    A table grown file by file holds ~50% more than its records (holes between buckets
    that grew by appends); when it was kept whole, the whole is read back in its place
    (``read_back``) in ~0.1 s: a million blobs, 95 -> 61 MB."""
    # by name, as S3 lists: which location of a blob is tried first must not depend on the driver
    files = sorted((obj.name, obj.size) for obj in storage.list("index/"))
    listed = {name for name, _ in files}

    def judged_as_before(meta: dict[str, Any]) -> bool:
        """Whether every index file a kept whole index was built from is still listed and
        would still be used (the registry applied afresh, as to a cached file)."""
        for name, kept in meta["files"].items():
            decoded = DecodedIndex.from_judged(kept["judged"], PackedEntries([], b""))
            if name not in listed or decoded is None or judge_index(name, decoded, codec, trust):
                return False
        return True

    index, judged = _kept_index(cache, judged_as_before)
    kept_blobs = len(index)
    if kept_blobs:
        files = [(name, size) for name, size in files if name not in index.files]
    else:
        index.reserve(sum(size for _, size in files) // INDEX_BYTES_PER_BLOB)

    def fetch(name: str) -> bytes | None:
        """The stored bytes, unless the cache holds the file (or it vanished: the decode
        finds out again and says so)."""
        if cache.holds(name):
            return None
        try:
            return storage.get(name)
        except NotFoundError:
            return None

    seen = set(index.files)  # a listing again (a file vanished) leaves out what was kept
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while files:
            seen.update(name for name, _ in files)
            vanished = False
            for name, fetched in _fetched_in_order(pool, fetch, files, workers):
                read = read_index_file(storage, codec, cache, trust, name, fetched)
                if read.problem is not None:
                    index.damaged[name] = read.problem
                if read.refused is not None:
                    index.refused[name] = read.refused
                if read.sealed_by is not None:
                    index.sealed[name] = read.sealed_by
                if read.entries is None:
                    vanished = vanished or read == IndexRead()
                    continue
                index.files[name] = [pack_id for pack_id, _, _ in read.entries.packs]
                index.file_blobs[name] = read.entries.blobs
                for pack_id, tree_end, records in read.entries.each():
                    index.add_packed(pack_id, tree_end, records)
                if read.decoded is not None:
                    judged[name] = read.decoded.judged()
            # A file listed a moment ago is gone: a consolidation (or prune) superseded it,
            # and wrote the index that replaces it before deleting it, so list again.
            files = (
                sorted((o.name, o.size) for o in storage.list("index/") if o.name not in seen)
                if vanished
                else []
            )
    index.judged = {name: judged[name] for name in index.files if name in judged}
    worth_keeping = len(index) >= KEEP_FROM and (len(index) - kept_blobs) * REWRITE_SHARE >= len(index)
    decoded = len(index) - kept_blobs
    if worth_keeping and index.files.keys() <= judged.keys():  # only a cache: never a failed load
        kept = cache.keep(WholeIndex(index.layout(judged), index.blob_table()))
        if kept and read_back and decoded >= KEEP_FROM:
            again = _read_back(index, cache, judged_as_before)
            if again is None:  # loaded anew, as the next process would
                del index, judged
                return _load_index(storage, codec, cache, trust, workers, read_back=False)
            return again, 0
    return index, decoded


def stored_index_problems(
    storage: Storage, codec: MetadataCodec, index: Index, workers: int = 8
) -> dict[str, str]:
    """The index files ``index`` was loaded from whose stored bytes are no longer those it
    read, with why (damaged, cut short, another trailer). A load takes a file from this
    host's copy once it was read or written here, never from the repository again: this
    reads each once more and checks it against its name (the hash of its bytes), and its
    trailer against the signature check held, without decoding it (a file of 50,000 blobs
    is ~2 MB hashed, ~35 MB decoded). A file gone meanwhile (a consolidation superseded it)
    is not a problem."""

    def problem(name: str) -> str | None:
        try:
            data = storage.get(name)
        except NotFoundError:  # gone meanwhile, or listed and not served: listed again below
            return "not found"
        check = codec.trailer_check(ObjectType.INDEX, NAMESPACE, name.rsplit("/", 1)[-1], data)
        if check is None:
            return f"{name} does not match its name (content hash differs)"
        held = index.judged.get(name, {}).get("check")
        if held is not None and check.to_json() != held:
            return f"{name} is damaged (its signature trailer is not the one read before)"
        return None

    names = list(index.files)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = {name: why for name, why in zip(names, pool.map(problem, names), strict=True) if why}
    if any(why == "not found" for why in found.values()):
        listed = {obj.name for obj in storage.list(NAMESPACE)}
        found = {
            name: f"{name} is listed but cannot be read" if why == "not found" else why
            for name, why in found.items()
            if why != "not found" or name in listed
        }
    return found


def _kept_index(
    cache: IndexCache, usable: Callable[[dict[str, Any]], bool]
) -> tuple[Index, dict[str, dict[str, Any]]]:
    """The whole index kept after an earlier load and its files' judgement inputs, or an
    empty index when none is usable."""
    whole = cache.whole(usable)
    if whole is not None:
        try:
            index = Index.restored(whole.meta, whole.table)
            return index, dict(index.judged)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # not a layout this version reads: loaded file by file
    return Index(), {}
