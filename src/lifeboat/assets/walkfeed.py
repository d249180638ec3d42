"""Reading a walk's files in batches (small ones by the walk's own thread, batches with a
large file on reader threads while the walk goes on), and handing every entry to a
streamed tree in walk order: the files and keys kinds, and a ``dir://`` objects source.
What is held is a window of batches and the entries waiting behind them, never a list of
every file, so memory does not grow with the number of files."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Generic, TypeVar

from lifeboat.repo.chunking import SMALL_FILE
from lifeboat.repo.parents import decoded_entry

if TYPE_CHECKING:
    from lifeboat.repo import Entry
    from lifeboat.repo.backup import BackupSession

READ_WORKERS = 4
BATCH_FILES = 64
BATCH_BYTES = 1 << 20
READ_AHEAD = READ_WORKERS * 4  # batches read ahead of the walk's place in the tree
HELD_ENTRIES = READ_AHEAD * BATCH_FILES  # slots held at most: batches being read and the entries behind them

W = TypeVar("W")  # what the walk yields
P = TypeVar("P")  # a file waiting for a reader

Ready = tuple["Entry", str | None]  # an entry and, for a file, its identity
Read = Ready | None  # None: the file went away before it was read, and is left out
_Slot = Ready | Future[list[Read]]


class WalkFeeder(ABC, Generic[W, P]):
    """Reads the walk's files in batches and gives the session every entry, read or not,
    in walk order. Unchanged files are taken from the parent by the walk itself: a file
    that needs no reading needs no reader.

    A batch of small files is read by the walk's own thread. A reader thread beside the
    walk cost more than it overlapped: each of its system calls handed the interpreter to
    the walk and waited to get it back, a context switch each (warm first backup of
    100,000 small files: 7.2-7.5 s with that reader, 6.4-6.7 s without; cold 8.7-9.1 s
    against 8.2 s). A batch with a large file goes to READ_WORKERS readers, whose reads are
    long enough to overlap with the walk.

    A subclass says what one walked item is (``add``: ``queue`` a file, ``take_or_defer``
    an unchanged one, ``hand_on`` a directory) and how a batch is read (``read_batch``, on
    the walk's thread or a reader thread: it may only use the session's thread-safe
    calls)."""

    def __init__(self, session: BackupSession) -> None:
        self.session = session
        self.with_meta = 0  # entries given to the session with metadata
        self.slots: deque[_Slot] = deque()  # in walk order: entries ready, batches being read
        self.reading = 0
        self.batch: list[P] = []
        self.batch_bytes = 0
        # every file of the batch is below SMALL_FILE: the walk's thread reads it; a batch
        # with a larger file goes to READ_WORKERS readers
        self.batch_small = True

    @abstractmethod
    def add(self, item: W) -> None:
        """One item of the walk, in walk order."""

    @abstractmethod
    def read_batch(self, batch: list[P]) -> list[Read]:
        """The entries of a batch's files, in its order (on the walk's or a reader thread)."""

    def run(self, items: Iterable[W]) -> None:
        """Feeds the whole walk; returns once every entry is in the tree. On any exception
        (a failed read, a deadline, SIGTERM) no further batch starts."""
        with ThreadPoolExecutor(max_workers=READ_WORKERS, thread_name_prefix="read") as pool:
            self.pool = pool
            try:
                for item in items:
                    self.add(item)
                self._submit()
                self._drain(0)
            except BaseException:
                for slot in self.slots:  # stopped (deadline, SIGTERM, a failure): read no more files
                    if isinstance(slot, Future):
                        slot.cancel()
                raise

    def queue(self, pending: P, size: int) -> None:
        """A file to read, after the ones queued before it."""
        self.batch.append(pending)
        self.batch_bytes += size
        self.batch_small = self.batch_small and size < SMALL_FILE
        # Files go in groups: the read-ahead asks the disk for a group's small files at
        # once, and a pool task (a Future, its lock and a queue hand-off) per 2 KB file
        # cost more than reading it.
        if len(self.batch) >= BATCH_FILES or self.batch_bytes >= BATCH_BYTES:
            self._submit()

    def take_or_defer(self, name: str, identity: str, parent: bytes | None) -> tuple[bool, Entry | None]:
        """(taken, the parent's entry for the reader). An unchanged file (``parent``, from
        ``session.parent_encoded``) with no file waiting in the batch ahead of it is taken
        here; one behind a waiting file is left to the batch's read, which keeps the walk order
        (the reader tries the parent's entry first). A parent entry whose chunks are gone
        (pruned) is not tried again: (False, None)."""
        if parent is None:
            return False, None
        if self.batch:
            return False, decoded_entry(parent)
        return self._took(name, identity, parent), None

    def hand_on(self, entry: Entry) -> None:
        """An entry that needs no reading (a directory, a link), after the files before it."""
        self._submit()  # the files before this entry keep their place
        self._ready((entry, None))

    def _took(self, name: str, identity: str, parent: bytes) -> bool:
        """Whether the walk took a file it has just seen unchanged from the parent (all its
        chunks still stored): nothing to read. With nothing ahead of it in walk order, the
        parent's entry goes into the tree as stored, not encoded again (its metadata, if
        any, is the parent's: the file is the one it describes)."""
        if not self.slots:
            with_meta = self.session.put_unchanged(name, identity, parent)
            self.with_meta += bool(with_meta)
            return with_meta is not None
        cached = decoded_entry(parent)
        entry = self.session.take_parent(name, cached) if cached is not None else None
        if entry is None:
            return False
        self._ready((entry, identity))
        return True

    def _ready(self, ready: Ready) -> None:
        if self.slots:
            self.slots.append(ready)
            # behind a batch still being read (a large file): wait for it rather than hold more
            self._drain(READ_AHEAD if len(self.slots) < HELD_ENTRIES else self.reading - 1)
        else:  # nothing ahead of it in walk order: straight into the tree
            self._put(ready)

    def _put(self, ready: Read) -> None:
        if ready is None:
            return
        entry, identity = ready
        self.with_meta += bool(entry.meta)
        self.session.put(entry, identity)

    def _submit(self) -> None:
        batch, small = self.batch, self.batch_small
        if batch:
            self.batch, self.batch_bytes, self.batch_small = [], 0, True
            if small:  # read here (see the class's docstring)
                for read in self.read_batch(batch):
                    if read is not None:
                        self._ready(read)
            else:
                self.slots.append(self.pool.submit(self.read_batch, batch))
                self.reading += 1
        self._drain(READ_AHEAD)

    def _drain(self, reading: int) -> None:
        """Gives the session what is done at the front; waits while more than ``reading``
        batches are being read."""
        while self.slots:
            slot = self.slots[0]
            if isinstance(slot, Future):
                if self.reading <= reading and not slot.done():
                    return
                results = slot.result()
                self.slots.popleft()
                self.reading -= 1
                for read in results:
                    self._put(read)
            else:
                self.slots.popleft()
                self._put(slot)
