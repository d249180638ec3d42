"""Reading many blobs in few requests: a restore's blobs planned as coalesced pack ranges.

``Repository.read_blob`` makes one ranged GET per blob (plus one per pack for its header):
fine for a tree or a WAL segment, ruinous for a restore from S3, where every request costs
the server more than the bytes do. ``PackRanges`` is given every blob a restore will ask
for, in the order it will ask, and plans one ranged GET per run of neighbouring blobs in a
pack (gaps below ``GAP`` are read through; a run starts at the pack's first byte when its
first blob is near it, so the header comes in the same request). Spans are fetched ahead
in the order they are first needed, by a few threads, and at most ``resident`` of them are
held at once: a span is dropped when its last planned use is served, or evicted (the one
the plan needs again last, judged by its earliest read not yet served) when another must
come in; an evicted span's blobs are fetched again on demand. Every blob is authenticated
and checked exactly as ``read_blob`` does, with the same errors naming the chunk and its
pack.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lifeboat.crypto.envelope import WRAPPED_KEY_LEN
from lifeboat.errors import IntegrityError, StorageError
from lifeboat.repo.chunking import decode_payload
from lifeboat.repo.format import BLOB_TREE, BlobLocation, check_blob_entry, pack_name, parse_pack_header
from lifeboat.repo.keyring import ESCROW_PACK_TAG, Keyring

if TYPE_CHECKING:
    from lifeboat.repo.handle import RepoHandle

PACK_HEADER_LEN = 7 + len(ESCROW_PACK_TAG) + WRAPPED_KEY_LEN  # an escrowed pack's header is the longest
GAP = 1 << 20  # unneeded bytes read through rather than split into another request
MAX_SPAN = 16 << 20  # one request's bytes at most (packs are 8 MiB by default)
# On a local disk a request costs a pread, not a round trip: short spans keep the memory
# held (and the bytes read through gaps) small, as the per-blob reads they replace did. A
# bucket restore's 32 threads each pin the span they are reading from: 2 MiB spans peaked
# at 200-212 MB for 20,000 objects, 1 MiB at 174-178 MB (25.6-27.0 s against 26.5-28.2 s).
LOCAL_GAP = 64 << 10
LOCAL_MAX_SPAN = 1 << 20
RESIDENT = 8  # spans held at once (fetched, in flight or being served)
# Spans fetched ahead of the readers: with the one being read, no more than this much of
# the longest a request may read (16 MiB from S3: 3 ahead; from a local disk's 1 MiB,
# RESIDENT - 1 as before). A restore of 4,000 objects (200 MB) from a repository on
# SeaweedFS into a bucket peaked at 226-243 MB with 7 ahead, 186-198 MB with 3 (178 MB
# holding 4 in all), in the same time and with each pack read once. Spans readers ask for
# are still held up to RESIDENT: holding fewer made larger objects read their spans again.
AHEAD_BYTES = 64 << 20
FETCHERS = 4


def open_blob(
    keyring: Keyring,
    blob_id: str,
    loc: BlobLocation,
    header: Callable[[], bytes],
    envelope: Callable[[], bytes | memoryview],
) -> bytes:
    """A blob's plaintext from its pack header and envelope, authenticated, bounded and
    checked against its id; every failure names the chunk and its pack."""
    [opened] = open_blobs(keyring, [(blob_id, loc)], header, lambda _: envelope())
    if isinstance(opened, IntegrityError):
        raise opened
    return opened


def open_blobs(
    keyring: Keyring,
    blobs: Iterable[tuple[str, BlobLocation]],
    header: Callable[[], bytes],
    envelope: Callable[[BlobLocation], bytes | memoryview],
) -> list[bytes | IntegrityError]:
    """``open_blob`` of each blob of one pack, the pack's header and key looked up once:
    each blob's plaintext, or the IntegrityError that refused it (naming the chunk and its
    pack), for the caller to look elsewhere."""
    out: list[bytes | IntegrityError] = []
    cipher = None
    for blob_id, loc in blobs:
        try:
            try:
                check_blob_entry((blob_id, loc.type, loc.offset, loc.length, loc.raw_length))
                if cipher is None:
                    wrapped = header()
                    cipher = keyring.pack_cipher(wrapped)
                sealed = envelope(loc)
                if len(sealed) != loc.length:
                    raise IntegrityError("the pack is shorter than the index says")
                try:
                    payload = cipher.open(sealed, bytes.fromhex(blob_id))
                except IntegrityError:
                    raise IntegrityError("failed authentication") from None
                data = decode_payload(payload, loc.raw_length)
                if not keyring.blob_matches(wrapped, data, blob_id):
                    raise IntegrityError(
                        f"chunk {blob_id[:16]} in {pack_name(loc.pack)} does not match its id"
                    )
            except IntegrityError as exc:
                where = f"chunk {blob_id[:16]} in {pack_name(loc.pack)}"
                message = str(exc)
                if message.startswith(where):
                    raise
                raise IntegrityError(f"{where}: {message}") from None
        except IntegrityError as refused:
            out.append(refused.with_traceback(None))  # see PackRanges._open_run
            continue
        out.append(data)
    return out


@dataclass
class Span:
    """One ranged GET: ``[start, end)`` of a pack and the blobs it serves."""

    pack: str
    start: int
    end: int
    uses: int = 0  # planned reads of its blobs not yet served
    blobs: list[str] = field(default_factory=list)
    needed_at: list[int] = field(default_factory=list)  # positions in the plan, ascending

    def next_need(self) -> float:
        """The plan position of the span's earliest read not yet served (infinite when none
        is left). Readers lag behind one another, so a global "position reached" would call
        a lagging span done and evict it under its readers; its own unserved reads do not."""
        if self.uses <= 0:
            return math.inf
        return self.needed_at[max(0, len(self.needed_at) - self.uses)]


def plan_spans(
    locations: dict[str, BlobLocation], order: Iterable[str], gap: int = GAP, max_span: int = MAX_SPAN
) -> tuple[list[Span], dict[str, int]]:
    """The spans covering ``locations`` (in the order ``order`` first needs them) and each
    blob's span number. A blob needed twice is read once when its span is still held."""
    uses: dict[str, int] = {}
    first: dict[str, int] = {}
    for position, blob_id in enumerate(order):
        if blob_id in locations:
            uses[blob_id] = uses.get(blob_id, 0) + 1
            first.setdefault(blob_id, position)
    by_pack: dict[str, list[str]] = {}
    for blob_id in uses:
        by_pack.setdefault(locations[blob_id].pack, []).append(blob_id)
    spans: list[tuple[int, Span]] = []
    for pack, blobs in by_pack.items():
        blobs.sort(key=lambda b: locations[b].offset)
        current: Span | None = None
        for blob_id in blobs:
            loc = locations[blob_id]
            end = loc.offset + loc.length
            if current is None:
                start = 0 if loc.offset - PACK_HEADER_LEN <= gap else loc.offset
                current = Span(pack, start, end)
            elif loc.offset - current.end > gap or end - current.start > max_span:
                spans.append((min(first[b] for b in current.blobs), current))
                current = Span(pack, loc.offset, end)
            current.end = max(current.end, end)
            current.blobs.append(blob_id)
            current.uses += uses[blob_id]
        if current is not None:
            spans.append((min(first[b] for b in current.blobs), current))
    spans.sort(key=lambda item: item[0])
    ordered = [span for _, span in spans]
    span_of = {blob_id: n for n, span in enumerate(ordered) for blob_id in span.blobs}
    for position, blob_id in enumerate(order):
        if blob_id in span_of:
            ordered[span_of[blob_id]].needed_at.append(position)
    return ordered, span_of


def on_local_disk(repo: RepoHandle) -> bool:
    """Whether a request costs a pread (a file:// repository) rather than a round trip."""
    return repo.storage.url.startswith("file://")


def span_limits(repo: RepoHandle) -> tuple[int, int]:
    """(gap read through, most bytes per request) for the repository's storage."""
    return (LOCAL_GAP, LOCAL_MAX_SPAN) if on_local_disk(repo) else (GAP, MAX_SPAN)


def known_locations(repo: RepoHandle, blob_ids: Iterable[str]) -> dict[str, BlobLocation]:
    """Where the index says each blob it knows is (blobs it does not know are left out)."""
    return repo.index().get_many(list(blob_ids))


def span_numbers(
    repo: RepoHandle, order: list[str], locations: dict[str, BlobLocation] | None = None
) -> dict[str, int]:
    """Each known blob's span number, spans in the order ``order`` first needs them."""
    if locations is None:
        locations = known_locations(repo, order)
    return plan_spans(locations, order, *span_limits(repo))[1]


class PackRanges:
    """Serves a planned set of blobs from coalesced pack ranges (thread-safe ``get``)."""

    def __init__(
        self,
        repo: RepoHandle,
        order: list[str],
        *,
        gap: int | None = None,
        max_span: int | None = None,
        resident: int = RESIDENT,
        fetchers: int = FETCHERS,
        locations: dict[str, BlobLocation] | None = None,
    ) -> None:
        """``locations``: the blobs' (``known_locations``), when the caller looked them up;
        ``resident``: spans held at once."""
        self.repo = repo
        if locations is None:
            locations = known_locations(repo, order)
        self.locations = locations
        default_gap, default_span = span_limits(repo)
        longest = default_span if max_span is None else max_span
        self.spans, self.span_of = plan_spans(locations, order, default_gap if gap is None else gap, longest)
        self.resident = max(2, resident)
        self.ahead = max(1, min(self.resident - 1, AHEAD_BYTES // max(1, longest) - 1))  # see AHEAD_BYTES
        self._held: dict[int, Future[bytes]] = {}
        self._next = 0  # the next span to fetch ahead
        self._furthest = -1  # the furthest span a reader asked for: held ones past it are ahead
        self._headers: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, fetchers), thread_name_prefix="pack-get")
        with self._lock:
            self._fill()

    def expect(self, order: list[str]) -> None:
        """The planned blobs will be asked for in ``order`` rather than the order planned:
        when a range must be dropped to make room, the one needed last is chosen by it.
        Before the first ``get``. (The ranges are still fetched ahead in the order planned:
        in ``order`` sorted by range, they are first needed in that order.)"""
        needed_at: dict[int, list[int]] = {}
        for position, blob_id in enumerate(order):
            n = self.span_of.get(blob_id)
            if n is not None:
                needed_at.setdefault(n, []).append(position)
        with self._lock:
            if any(len(needed_at.get(n, ())) != len(span.needed_at) for n, span in enumerate(self.spans)):
                return  # not the planned blobs: the plan's own positions stay
            for n, span in enumerate(self.spans):
                span.needed_at = needed_at.get(n, [])

    def get(self, blob_id: str) -> bytes:
        """The blob's verified plaintext (unplanned blobs are read one by one)."""
        n = self.span_of.get(blob_id)
        if n is None:
            return self.repo.read_blob(blob_id)
        span = self.spans[n]
        with self._lock:
            self._furthest = max(self._furthest, n)
            future = self._held.get(n)
            if future is None:
                future = self._fetch(n)
                self._fill()  # the ranges after it too: readers are this far already
        loc = self.locations[blob_id]

        def envelope() -> memoryview:
            data = memoryview(future.result())
            return data[loc.offset - span.start : loc.offset - span.start + loc.length]

        try:
            return open_blob(self.repo.keyring, blob_id, loc, lambda: self._header(span, future), envelope)
        except (IntegrityError, StorageError):  # a missing pack, a range past its end (416)
            if not self.repo.index().demote(blob_id, loc):
                raise
            return self.repo.read_blob(blob_id)  # another index file lists it elsewhere
        finally:
            with self._lock:
                span.uses -= 1
                failed = future.done() and not future.cancelled() and future.exception() is not None
                if failed and self._held.get(n) is future:
                    del self._held[n]  # a retry reads the range again rather than the error
                if span.uses <= 0 and self._held.pop(n, None) is not None:
                    self._fill()

    def get_many(self, blob_ids: list[str]) -> list[bytes]:
        """``get`` of each, in order: a run of blobs from one span is opened at once (its
        range, pack key and bookkeeping looked up once, not once a blob: a restore of
        small files asks for one blob per file, and ``get``'s own work was most of it)."""
        out: list[bytes] = []
        i = 0
        while i < len(blob_ids):
            n = self.span_of.get(blob_ids[i])
            j = i + 1
            if n is not None:
                while j < len(blob_ids) and self.span_of.get(blob_ids[j]) == n:
                    j += 1
                out.extend(self._open_run(n, blob_ids[i:j]))
            else:
                out.append(self.get(blob_ids[i]))
            i = j
        return out

    def _open_run(self, n: int, blob_ids: list[str]) -> list[bytes]:
        span = self.spans[n]
        with self._lock:
            self._furthest = max(self._furthest, n)
            future = self._held.get(n)
            if future is None:
                future = self._fetch(n)
                self._fill()  # the ranges after it too: readers are this far already
        out: list[bytes] = []
        try:
            try:
                data = memoryview(future.result())  # each blob read in place, not copied out
                opened: Sequence[bytes | IntegrityError | StorageError] = open_blobs(
                    self.repo.keyring,
                    ((b, self.locations[b]) for b in blob_ids),
                    lambda: self._header(span, future),
                    lambda loc: data[loc.offset - span.start : loc.offset - span.start + loc.length],
                )
            except (IntegrityError, StorageError) as exc:  # the range, or its header, is not there
                # without its traceback: kept, it made a cycle (this frame, its list) holding
                # the whole range until the collector's next full pass
                opened = [exc.with_traceback(None)] * len(blob_ids)
            for blob_id, result in zip(blob_ids, opened, strict=True):
                if isinstance(result, bytes):
                    out.append(result)
                    continue
                loc = self.locations[blob_id]
                if not self.repo.index().demote(blob_id, loc):
                    raise result
                out.append(self.repo.read_blob(blob_id))  # another index file lists it elsewhere
            return out
        finally:
            with self._lock:
                span.uses -= len(blob_ids)  # as get() would have, once a blob, served or not
                failed = future.done() and not future.cancelled() and future.exception() is not None
                if failed and self._held.get(n) is future:
                    del self._held[n]  # a retry reads the range again rather than the error
                if span.uses <= 0 and self._held.pop(n, None) is not None:
                    self._fill()

    def close(self) -> None:
        """Stops fetching ahead and drops what is held."""
        with self._lock:
            self._next = len(self.spans)
            for future in self._held.values():
                future.cancel()
            self._held.clear()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> PackRanges:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _header(self, span: Span, future: Future[bytes]) -> bytes:
        header = self._headers.get(span.pack)
        if header is None:
            raw = future.result()[:PACK_HEADER_LEN] if span.start == 0 else self._get_header(span.pack)
            header, _ = parse_pack_header(raw)
            self._headers[span.pack] = header
        return header

    def _get_header(self, pack: str) -> bytes:
        return self.repo.storage.get(pack_name(pack), 0, PACK_HEADER_LEN)

    def _fetch(self, n: int) -> Future[bytes]:
        """Starts the span's GET (lock held); when full, the held span needed again last
        (Belady's choice: the plan says when each span is needed) makes room."""
        while len(self._held) >= self.resident:
            victim = max(self._held, key=lambda h: self.spans[h].next_need())
            del self._held[victim]
        span = self.spans[n]
        name, length = pack_name(span.pack), span.end - span.start
        future = self._pool.submit(self.repo.storage.get, name, span.start, length)
        self._held[n] = future
        return future

    def _fill(self) -> None:
        """Fetches ahead, in the order spans are first needed, while there is room and no
        more than ``ahead`` spans past the furthest one asked for are held (lock held); past
        it, not read from: a span whose readers gave up (an object that failed) falls behind
        them and no longer counts. Room is made from a held span that was read from and is
        needed again only after the next one (``_held_for_later``): readers lag behind one
        another, and spans held for a lagging reader's later reads took every slot, so the
        ranges after them were fetched only once a reader waited for them (a 2 GB restore
        from S3 waited 5.7 s in all)."""
        while self._next < len(self.spans):
            n = self._next
            span = self.spans[n]
            if n in self._held or span.uses <= 0:
                self._next += 1
                continue
            if sum(1 for h in self._held if h > self._furthest) >= self.ahead:
                return  # far enough ahead (a long range fetched early is memory held)
            while len(self._held) >= self.resident - 1:
                later = [h for h in self._held if self._held_for_later(h, span)]
                if not later:
                    return  # every held span is needed before this one, or not read yet
                del self._held[max(later, key=lambda h: self.spans[h].next_need())]
            self._next += 1
            self._fetch(n)

    def _held_for_later(self, held: int, span: Span) -> bool:
        """Whether a held span may make room for ``span``: read from already, its reads
        left all come after ``span``'s first, and its range is here (a range fetched
        ahead and not read yet, or one still coming, is not thrown away)."""
        kept = self.spans[held]
        return (
            kept.uses < len(kept.needed_at)
            and kept.next_need() > span.next_need()
            and self._held[held].done()
        )


class TreePacks:
    """A snapshot's tree blobs, each pack's tree part read in one GET (header included) and
    the last ``held`` packs kept: a per-directory tree costs a request per tree pack, not
    one per directory (trees have packs of their own, repo/backup.py), and a second pass
    over a small tree reads nothing again. Single-threaded."""

    def __init__(self, repo: RepoHandle, held: int = 2) -> None:
        self.repo = repo
        self.held = held
        self._packs: OrderedDict[str, bytes] = OrderedDict()

    def get(self, blob_id: str) -> bytes:
        """The tree blob's verified plaintext."""
        index = self.repo.index()
        loc = index.get(blob_id)
        if loc is None or loc.type != BLOB_TREE:
            return self.repo.read_blob(blob_id)  # refreshes the index; names what is missing
        data = self._packs.get(loc.pack)
        if data is None:
            data = self._fetch(loc)
            if data is None:
                return self.repo.read_blob(blob_id)
        self._packs.move_to_end(loc.pack)
        if loc.offset + loc.length > len(data):
            return self.repo.read_blob(blob_id)

        def header() -> bytes:
            return parse_pack_header(data[:PACK_HEADER_LEN])[0]

        try:
            return open_blob(
                self.repo.keyring, blob_id, loc, header, lambda: data[loc.offset : loc.offset + loc.length]
            )
        except IntegrityError:
            if not index.demote(blob_id, loc):
                raise
            return self.repo.read_blob(blob_id)  # another index file lists it elsewhere

    def _fetch(self, loc: BlobLocation) -> bytes | None:
        """The pack's bytes from its start to its last tree blob's end (None when that is
        more than one request should read, 2 MiB on a local disk: then blobs are read one
        by one)."""
        end = max(loc.offset + loc.length, self.repo.index().tree_end(loc.pack))
        if end > span_limits(self.repo)[1]:  # on a local disk a blob's own read is a pread
            return None
        try:
            data = self.repo.storage.get(pack_name(loc.pack), 0, end)
        except StorageError:
            return None  # read_blob tries the blob's other locations, or names what is missing
        self._packs[loc.pack] = data
        while len(self._packs) > self.held:
            self._packs.popitem(last=False)
        return data
