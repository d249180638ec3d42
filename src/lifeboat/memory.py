"""Process-wide memory tuning: glibc's malloc (elsewhere those knobs do nothing) and
pauses of Python's cyclic garbage collector.

The one place lifeboat tunes the allocator and switches the collector off and on: many
transfer threads and buffers of many sizes make glibc's defaults keep far more memory than
is live, and building a large structure of small objects makes the collector walk it again
and again.
"""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3
M_TRIM_THRESHOLD = -1


def _mallopt(param: int, value: int) -> None:
    if sys.platform != "linux":
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(param, value)
    except (OSError, AttributeError):
        pass  # not glibc (musl has no arenas and no such knobs)


def limit_arenas(arenas: int = 4) -> None:
    """glibc gives threads their own malloc arenas (up to 8 per core). With dozens of
    transfer threads, buffers freed into one arena were not reused by another: a 20,000
    object bucket backup peaked at 297 MB, 243 MB with four arenas. Two arenas saved a
    little more but slowed restores by 15% (threads queueing on the arena locks)."""
    _mallopt(M_ARENA_MAX, arenas)


def release_free_memory() -> None:
    """Collects, then hands the allocator's wholly free pages back to the kernel (glibc's
    ``malloc_trim``). A table grown record by record leaves holes between its blocks; once
    it is dropped, glibc keeps those pages for later allocations unless asked: a million-blob
    index loaded file by file held ~95 MB, the same table read back whole 61 MB, but only
    when the first one's pages were returned before."""
    gc.collect()
    return_free_pages()


def return_free_pages() -> None:
    """glibc's ``malloc_trim`` alone (no collection): a couple of milliseconds. Work that
    frees thousands of small buffers per step calls it every few steps. A prune repacking a
    million small files' blobs opens, checks and seals ~3,500 buffers of ~2 KB per pack,
    and glibc kept the freed pages between live ones: RSS climbed from 107 to 190 MB over
    the first 25 packs; trimmed after each pack it stayed at 125-133 MB. After every fourth
    pack the peak is the same and the pages taken back cost no time (after each: +2-3 s
    of system time over 197 packs)."""
    if sys.platform != "linux":
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


# the thresholds of the large_buffers_mapped blocks the process is inside: mallopt cannot
# read its setting back, and the allocator is the process's, not a caller's
_mapped_thresholds: list[int] = []
_mapped_lock = threading.Lock()


@contextmanager
def large_buffers_mapped(threshold: int = 256 << 10) -> Iterator[None]:
    """While inside, every buffer above ``threshold`` gets its own mapping, returned to the
    kernel on free.

    glibc raises its mmap threshold to the largest block freed so far; after that, object
    bodies of every size are carved from the arenas between long-lived snapshot entries
    and fragment them (a 20,000-object bucket backup: 235 MB with the default, 182 MB with
    this, at the same speed). Only around network-bound work: a 2 GB file backup or
    restore takes twice as long (restore 2.2 -> 4.9 s) mapping and faulting in fresh pages
    for each 1 MiB chunk. On the way out of the last block the thresholds are fixed where
    glibc's own adjustment tops out (mmap 32 MiB, trim twice that), as mallopt cannot turn
    the adjustment back on: later work in the same process (the daemon, `backup` of every
    asset) runs as before. Blocks nest, in any order and from any thread: the lowest
    threshold of the blocks still open holds."""
    entered = False
    try:
        with _mapped_lock:
            _mapped_thresholds.append(threshold)
            entered = True
            _mallopt(M_MMAP_THRESHOLD, min(_mapped_thresholds))
        yield
    finally:
        if entered:
            with _mapped_lock:
                _mapped_thresholds.remove(threshold)
                if _mapped_thresholds:
                    _mallopt(M_MMAP_THRESHOLD, min(_mapped_thresholds))
                else:
                    _mallopt(M_MMAP_THRESHOLD, 32 << 20)
                    _mallopt(M_TRIM_THRESHOLD, 64 << 20)  # glibc keeps it at twice the threshold


class _CollectorPauses:
    """The collection_paused blocks open in this process: the collector is the
    process's, so the last block out turns it back on, and only if it was on when the
    first came in."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0
        self.resume = False


_collector_pauses = _CollectorPauses()


# (first generation, second, third): a young collection after 100,000 new containers, not
# 700; an older one after ten of those; the oldest after ten of those (and, as always, only
# once a quarter of the heap is new since the last)
RARE_COLLECTIONS = (100_000, 10, 10)


def collect_rarely() -> None:
    """The cyclic collector stays on, but runs seldom, for the rest of the process.

    A restore of 100,000 small files spent 331 ms in 1,161 collections walking its planned
    entries again and again (8 of them of the whole heap: 231 ms), for ~1,100 cyclic objects
    made at start-up; with these thresholds set as the restore begins, 74 ms in all, most
    of it in the collections of start-up before them. The collector is
    not switched off: cycles made per request (botocore leaves three per modelled call) are
    young and still collected within 100,000 allocations, so memory stays bounded however
    many objects a restore writes."""
    gc.set_threshold(*RARE_COLLECTIONS)


@contextmanager
def collection_paused() -> Iterator[None]:
    """While inside, Python's cyclic garbage collector does not run.

    For building a large structure of small objects that hold no cycles (the snapshot
    cache's 10,000 decoded headers, the listing built from them): every 700 allocations
    the collector looks at the young objects, and every few of those at the older ones,
    the structure being built among them. Listing 10,000 snapshots spent 30-90 ms of its
    ~400 ms there (gc.callbacks), for nothing to collect. Objects are still freed by their
    reference counts; a cycle made inside waits for the first collection after.

    The collector is the process's: a pause holds for every thread, so it is kept to work
    that waits on no network (another thread's garbage piles up meanwhile). Blocks nest,
    in any order and from any thread; the last one out turns the collector back on if it
    was on when the first came in, even if someone turned it off in between (nothing in
    lifeboat does)."""
    pauses = _collector_pauses
    with pauses.lock:
        if pauses.open == 0:
            pauses.resume = gc.isenabled()
        pauses.open += 1
        gc.disable()
    try:
        yield
    finally:
        with pauses.lock:
            pauses.open -= 1
            if pauses.open == 0 and pauses.resume:
                gc.enable()
