"""Small objects of a snapshot restored into a fresh directory by the writer process
(lifeboat.filewriters): this process reads and verifies their chunks, a run of them at a
time, and the writer creates the files on the other core.

Everything the writer does not make is written here, the usual way (DirWriter), with the
usual outcome per object: a file it found already there (planted during the restore), a
run whose chunks failed to read or verify (each object then read again on its own, with
retries, and its failure recorded), and, should the writer fail, every object it did not
answer for (it stops at its first error; the same write here then fails the same way, a
full disk included, and says so for its object). After a failure no more runs are sent.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING

from lifeboat.assets.objects.keypaths import key_to_relpath
from lifeboat.errors import LifeboatError, RestoreError
from lifeboat.filewriters import PLAIN, SEND_BYTES, SEND_FILES, FileSpec, FileWriters
from lifeboat.repo.chunking import SMALL_FILE
from lifeboat.targetdir import split_parent

QUEUED_RUNS = 2  # runs waiting for the sending thread (each holds items, not their bytes)

if TYPE_CHECKING:
    from lifeboat.assets.objects.dirtarget import DirWriter
    from lifeboat.assets.objects.restore import Item
    from lifeboat.repo import SnapshotReader


def goes_to_writer(item: Item) -> bool:
    """A snapshot object of one small chunk: what the writer makes."""
    entry = item.entry
    return entry is not None and len(entry.chunks) == 1 and entry.size < SMALL_FILE


class SmallObjects:
    """Sends runs of small objects to ``out`` from a thread of their own (a send waits
    while the writer has IN_FLIGHT runs unanswered, or its pipe is full), so that this
    thread goes on reading the tree. ``write_here(item)`` restores one object as if there
    were no writer; ``write_data(item, data)`` writes verified bytes through the DirWriter;
    ``made(items, size)`` counts what the writer made (on the writer's reply thread); the
    others run on the sending thread too. Used as a context manager: runs not yet started
    when it ends are dropped, the one sending is waited for."""

    def __init__(
        self,
        out: FileWriters,
        reader: SnapshotReader,
        writer: DirWriter,
        write_here: Callable[[Item], None],
        write_data: Callable[[Item, bytes], None],
        made: Callable[[int, int], None],
    ) -> None:
        self._out: FileWriters | None = out
        self._reader = reader
        self._writer = writer
        self._write_here = write_here
        self._write_data = write_data
        self._made = made
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[list[Item], list[bytes]]] = {}  # sent, not answered
        self._left: list[tuple[Item, bytes]] = []  # the writer did not make them
        self._next = 0
        self._lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-small")
        self._queued: deque[Future[None]] = deque()

    def __enter__(self) -> SmallObjects:
        return self

    def __exit__(self, *exc: object) -> None:
        self._lane.shutdown(wait=True, cancel_futures=True)

    def restore(self, items: list[Item]) -> None:
        """Every item, in order: runs of small objects to the writer, the rest here."""
        run: list[Item] = []
        size = 0
        for item in items:
            entry = item.entry  # goes_to_writer, inlined: a call per object was 4% of a restore
            if self._out is None or entry is None or len(entry.chunks) != 1 or entry.size >= SMALL_FILE:
                self._queue(run)
                run, size = [], 0
                self._write_here(item)
                continue
            run.append(item)
            size += entry.size
            if len(run) == SEND_FILES or size >= SEND_BYTES:
                self._queue(run)
                run, size = [], 0
        self._queue(run)

    def settle(self) -> None:
        """Waits for every run to be sent and answered (a batch's pack ranges are dropped
        after it), and writes here what the writer did not make."""
        while self._queued:
            self._queued.popleft().result()
        out = self._out
        if out is not None:
            try:
                out.drain()
            except OSError:
                self._out = None  # failed: the objects it did not make are written below
        self._write_left()

    def _queue(self, run: list[Item]) -> None:
        if not run:
            return
        while len(self._queued) >= QUEUED_RUNS:
            self._queued.popleft().result()
        self._queued.append(self._lane.submit(self._send, run))

    def _send(self, run: list[Item]) -> None:
        out = self._out
        if out is None:
            for item in run:
                self._write_here(item)
            return
        try:
            datas = self._reader.read_small([item.entry for item in run if item.entry is not None])
        except LifeboatError:  # a chunk failed to read or verify: each on its own, with retries
            for item in run:
                self._write_here(item)
            return
        specs: list[FileSpec] = []
        sent: list[Item] = []
        sent_data: list[bytes] = []
        here: list[tuple[Item, bytes]] = []  # a parent that could not be made: its failure, here
        made = None  # the parent made for the object before (a run is mostly one directory)
        for item, data in zip(run, datas, strict=True):
            parent, name = split_parent(key_to_relpath(item.key))
            if parent != made:
                try:
                    self._writer.make_parent(parent)  # the writer never makes directories
                except RestoreError:
                    here.append((item, data))
                    continue
                made = parent
            specs.append((parent, name, data, PLAIN, -1, -1, -1))
            sent.append(item)
            sent_data.append(data)
        for item, data in here:
            self._write_data(item, data)
        if not specs:
            return
        with self._lock:
            number, self._next = self._next, self._next + 1
            self._pending[number] = (sent, sent_data)
        try:
            out.send(specs, partial(self._answered, number), threading.Event())
        except OSError:
            self._out = None  # failed: what it did not make is written below
        self._write_left()

    def _answered(self, number: int, written: int, existing: list[int], _: dict[int, str]) -> None:
        """The writer's reply: made the first ``written`` + ``len(existing)`` but those
        found already there; whatever follows, it did not reach (it failed). Both are left
        for the sending side to write (nothing is written on the reply thread: an error
        there would stand in for the writer's own, and what it had not yet handed on would
        be lost with it)."""
        with self._lock:
            run, datas = self._pending.pop(number)
            reached = written + len(existing)
            self._left += [(run[k], datas[k]) for k in existing]
            if reached < len(run):
                self._left += zip(run[reached:], datas[reached:], strict=True)
        if not existing:  # the usual reply, all made: the general case was 6% of a restore
            self._made(reached, sum(map(len, datas[:reached])))
            return
        found = set(existing)
        made = [k for k in range(reached) if k not in found]
        self._made(len(made), sum(len(datas[k]) for k in made))

    def _write_left(self) -> None:
        """What the writer did not make: files it found already there, the rest of a run it
        failed in and, once it failed, every run it never answered."""
        with self._lock:
            if self._out is not None and not self._left:
                return
            left, self._left = self._left, []
            if self._out is None:
                for run, datas in self._pending.values():
                    left += zip(run, datas, strict=True)
                self._pending.clear()
        for item, data in left:
            self._write_data(item, data)
