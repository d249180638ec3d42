"""Reading snapshots back: trees, verified file contents, parallel restores to a directory."""

from __future__ import annotations

import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from lifeboat.errors import IntegrityError, LifeboatError, RestoreError
from lifeboat.filewriters import (
    SEND_BYTES,
    SEND_FILES,
    WRITER_FROM,
    FileSpec,
    FileWriters,
    WriterSlot,
    small_file_writer,
)
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo.chunking import SMALL_FILE
from lifeboat.repo.model import Entry, SnapshotInfo, SnapshotStats
from lifeboat.repo.packread import PackRanges, TreePacks, known_locations, on_local_disk, span_numbers
from lifeboat.repo.trees import TREE_FORMAT_SINGLE, iter_tree
from lifeboat.targetdir import (
    DISK_FULL,
    TEMP_FLAGS,
    TargetDir,
    apply_file_metadata,
    free_space,
    readable_size,
    refuse_short_space,
    rounded,
    split_parent,
    write_all,
)

if TYPE_CHECKING:
    from lifeboat.repo.handle import RepoHandle

PREFETCH = 8
OPEN_FILES = 256  # files a restore holds open at once while it writes them in pack order
_T = TypeVar("_T")
BATCH_FILES = 64  # files of one chunk one worker task writes (a task per file costs more)
# Files a restore plans in pack order at once: the plan holds a few hundred bytes per chunk,
# so a bounded batch keeps a restore's memory flat in the number of files; a batch is many
# packs' worth of small files, so the packs are still read whole, in order.
PLAN_FILES = 16384
PLAN_CHUNKS = 65536
# Large restored files are flushed to disk as each completes, by two threads that only wait
# on the disk: the writeback overlaps the (CPU-bound) restore of the rest, and the server's
# own start-up sync of its data directory (1.1 s for a 4.4 GB cluster) finds little left.
FLUSH_FROM = 1 << 20
# Files this large are spread over lanes written side by side (restore_lanes). ext4 and XFS
# hold a file's inode lock through every buffered write, so however many workers a writer
# has, it copies into one file at a time, and workers waiting on that lock spin on it. Two
# lanes copy into two files at once, as pgBackRest's two processes do. A 4.4 GB PostgreSQL
# base backup on 2 cores, when copying into the page cache was the VM's bottleneck: 24.2 s
# against 27.1 s in one lane (median of 5 alternated; pgBackRest's restore 13.8-17.3 s).
# Each lane has the limits of a whole restore (workers, open files, resident pack ranges).
# Only from a repository on local disk: each lane plans its own pack ranges, and a backup
# packs several files at once, so from S3 each lane read each pack in pieces. A 2 GB tree
# on SeaweedFS took 855-893 GETs in two lanes against 211-243 in one, 40% more of the
# server's CPU, and one lane restored it 10% faster (three alternated pairs).
LANE_FROM = 64 << 20
LANES = 2


class ReadBack(Protocol):
    """A restore that reads its files back (a keys restore, to fingerprint each again).
    Small files the writer process makes are read back there, on the other core, and
    compared with the verified bytes sent: those equal are handed to ``read_back``; the
    caller reads back every other file of a batch itself once ``written`` is called,
    through the restore's own target descriptor."""

    def read_back(self, entry: Entry, data: bytes) -> None:
        """``entry``'s file is in the target, read back equal to ``data``, its verified bytes
        (called on the writer's reply thread)."""

    def written(self, tree: TargetDir, entries: list[Entry]) -> None:
        """Every file of ``entries`` (a planned batch: its files, then its links) is in the target."""

    def finished(self, tree: TargetDir, dirs: list[Entry]) -> None:
        """The whole tree is in the target, ``dirs`` its directories: a path written twice
        (overlapping roots) is judged by what holds it now."""


@dataclass
class RestoreStats:
    """What a restore wrote: files, bytes, links, time."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    seconds: float = 0.0
    verified: int = 0
    failed: list[str] = field(default_factory=list)


def safe_relative(path: str) -> Path:
    """A tree path as a relative Path that cannot escape the restore target."""
    return Path(entry_name(path))


def target_is_empty(target: Path) -> bool:
    """Whether the restore target is missing or an empty directory."""
    return not target.exists() or (target.is_dir() and not any(target.iterdir()))


class SnapshotReader:
    """Reads one snapshot's tree and file contents (needs the recovery key)."""

    def __init__(self, repo: RepoHandle, info: SnapshotInfo) -> None:
        self.repo = repo
        self.info = info
        self._entries: list[Entry] | None = None
        self._blobs: PackRanges | None = None
        self._trees = TreePacks(repo)

    def entries(self) -> list[Entry]:
        """Every entry of the snapshot's tree, as a list (``iter_entries`` holds less)."""
        if self._entries is None:
            self._entries = list(self.iter_entries())
        return self._entries

    def iter_entries(self) -> Iterator[Entry]:
        """Every entry, each directory before its content: a per-directory tree (format 2)
        is read one directory at a time, so memory does not grow with the number of files."""
        if self._entries is not None:
            return iter(self._entries)
        what = f"snapshot {self.info.short_id}"
        return iter_tree(self._trees.get, self.info.tree, self.info.tree_format, what)

    def selected(self, select: Callable[[Entry], bool] | None) -> Callable[[], Iterator[Entry]]:
        """The entries a restore writes, as a pass that can be made again (of a per-directory
        tree, a pass holds one directory at a time)."""
        if self.info.tree_format == TREE_FORMAT_SINGLE:
            # One entry per path (the last wins): older snapshots could hold two roots with
            # one basename, and two writers of one path would race on its temp file.
            whole = list({e.path: e for e in self.entries() if select is None or select(e)}.values())
            return lambda: iter(whole)
        return lambda: (e for e in self.iter_entries() if select is None or select(e))

    @contextmanager
    def planned(self, entries: Iterable[Entry]) -> Iterator[None]:
        """While open, ``open`` and ``read`` serve these entries' chunks (best asked for in
        this order) from coalesced pack ranges: a few large reads rather than one per chunk."""
        with PackRanges(self.repo, [c for e in entries for c in e.chunks]) as blobs:
            self._blobs = blobs
            try:
                yield
            finally:
                self._blobs = None

    def in_pack_order(self, items: list[_T], entry_of: Callable[[_T], Entry | None]) -> list[_T]:
        """While ``planned``: ``items`` ordered by the pack range that holds their entry's
        first chunk (the order the plan reads the ranges in; within one, files of one chunk
        first; items without an entry before all, the order kept among equals), and the
        plan told to expect them so. A run of small files read in this order opens each
        range once, whichever order the backup stored them in: packs filled by several
        threads at once (a bucket's downloads) hold neighbouring keys far apart."""
        blobs = self._blobs
        if blobs is None:
            return items
        span_of, last = blobs.span_of, len(blobs.spans)

        def position(item: _T) -> tuple[int, bool]:
            entry = entry_of(item)
            if entry is None or not entry.chunks:
                return -1, False
            return span_of.get(entry.chunks[0], last), len(entry.chunks) > 1

        ordered = sorted(items, key=position)
        blobs.expect([c for item in ordered if (entry := entry_of(item)) is not None for c in entry.chunks])
        return ordered

    def open(self, entry: Entry) -> Iterator[bytes]:
        """The file's bytes, chunk by chunk, each authenticated and id-checked."""
        read = self._blobs.get if self._blobs is not None else self.repo.read_blob
        if len(entry.chunks) <= 1:
            for chunk_id in entry.chunks:
                yield read(chunk_id)
            return
        with ThreadPoolExecutor(max_workers=min(PREFETCH, len(entry.chunks))) as pool:
            futures = []
            it = iter(entry.chunks)
            for chunk_id in it:
                futures.append(pool.submit(read, chunk_id))
                if len(futures) >= PREFETCH:
                    break
            for chunk_id in it:
                yield futures.pop(0).result()
                futures.append(pool.submit(read, chunk_id))
            for future in futures:
                yield future.result()

    def read(self, entry: Entry) -> bytes:
        """A file's whole content, verified."""
        return b"".join(self.open(entry))

    def read_small(self, entries: list[Entry]) -> list[bytes]:
        """The verified content of files of one chunk each, read together when planned."""
        return small_contents(self._blobs, self.repo, entries)

    def restore_tree(
        self,
        target: Path,
        *,
        force: bool = False,
        progress: ProgressSink = NO_PROGRESS,
        select: Callable[[Entry], bool] | None = None,
        workers: int = 8,
        chown: bool | None = None,
        mode_of: Callable[[Entry], int] | None = None,
        read_back: ReadBack | None = None,
    ) -> RestoreStats:
        """Write the snapshot's tree into ``target``, every chunk authenticated and id-checked.

        Nothing outside ``target`` is ever written: links already in it are replaced, never
        followed (see lifeboat.targetdir). With ``force`` the tree is merged into what is
        there: the snapshot's entries replace whatever holds their names (a directory where
        the snapshot has a file is removed, and the reverse); nothing else is deleted.
        Owners, and with them setuid/setgid bits, are restored only when running as root.
        On a full disk everything this restore created is removed again; so is everything
        written into an empty target when its tree turns out damaged or names an unsafe path.
        ``read_back``: see ReadBack."""
        import time

        started = time.monotonic()
        fresh = target_is_empty(target)
        if not force and not fresh:
            raise RestoreError(
                f"target {target} is not empty", hint="choose an empty directory or pass --force"
            )
        entries = self.selected(select)
        do_chown = os.geteuid() == 0 if chown is None else chown
        meta = _Metadata(do_chown, mode_of)
        # a whole snapshot into an empty target may skip the exact pass (see check_space)
        recorded = self.info.stats if select is None and not force else None
        progress.start(check_space(target, entries, force, recorded))
        tree = TargetDir(target, fresh=fresh)
        if not force and not tree.was_empty:  # filled by somebody else since the check above
            tree.close()
            raise RestoreError(
                f"target {target} is not empty", hint="choose an empty directory or pass --force"
            )
        stats = RestoreStats()
        tree_failed: list[LifeboatError] = []

        def read_tree() -> Iterator[Entry]:
            try:
                yield from entries()
            except LifeboatError as exc:  # damaged, unreadable: what the exact pass refuses
                tree_failed.append(exc)
                raise

        try:
            try:
                with small_file_writer(tree, _small_files_expected(recorded)) as files_out:
                    self._write_tree(tree, read_tree(), stats, progress, meta, workers, files_out, read_back)
            except OSError as exc:
                raise _restore_failure(tree, target, exc, stats) from None
            except LifeboatError as exc:
                # Found as the tree was written, not before (check_space skipped its pass):
                # into the empty target, none of it stays, as when the pass refused it.
                if not force and (isinstance(exc, UnsafePath) or tree_failed):
                    tree.take_back()
                raise
        finally:
            tree.close()
        stats.seconds = round(time.monotonic() - started, 3)
        return stats

    def _write_tree(
        self,
        tree: TargetDir,
        entries: Iterator[Entry],
        stats: RestoreStats,
        progress: ProgressSink,
        meta: _Metadata,
        workers: int,
        files_out: WriterSlot | None,
        read_back: ReadBack | None = None,
    ) -> None:
        """Directories as they come, files in batches planned in pack order, each batch's
        links after its files; directories' metadata last, deepest first (writing into a
        directory changes its mtime). Only the directories are held to the end."""
        dirs: list[Entry] = []
        files: list[Entry] = []
        links: list[Entry] = []
        chunks = 0
        for entry in entries:
            if entry.type == "dir":
                rel = entry_name(entry.path)
                tree.acquire(rel)
                tree.release(rel)
                stats.dirs += 1
                dirs.append(entry)
            elif entry.type == "file":
                files.append(entry)
                chunks += len(entry.chunks)
            elif entry.type == "symlink":
                links.append(entry)
            if len(files) >= PLAN_FILES or chunks >= PLAN_CHUNKS:
                self._write_batch(tree, files, links, stats, progress, meta, workers, files_out, read_back)
                files, links, chunks = [], [], 0
        self._write_batch(tree, files, links, stats, progress, meta, workers, files_out, read_back)
        for entry in sorted(dirs, key=lambda e: e.path.count("/"), reverse=True):
            rel = entry_name(entry.path)
            fd = tree.acquire(rel)
            try:
                meta.apply_fd(fd, entry)
            finally:
                tree.release(rel)
        if read_back is not None:
            read_back.finished(tree, dirs)

    def _write_batch(
        self,
        tree: TargetDir,
        files: list[Entry],
        links: list[Entry],
        stats: RestoreStats,
        progress: ProgressSink,
        meta: _Metadata,
        workers: int,
        files_out: WriterSlot | None,
        read_back: ReadBack | None = None,
    ) -> None:
        lanes = restore_lanes(files) if read_back is None and on_local_disk(self.repo) else [files]
        if len(lanes) > 1:
            lock, stop = threading.Lock(), threading.Event()

            def write(lane: list[Entry], first: bool) -> None:
                out = files_out if first else None  # the small-file writer serves one lane
                writer = _ChunkWriter(
                    self.repo, tree, stats, progress, meta, workers, out, lock=lock, stop=stop
                )
                writer.write(lane)

            _in_lanes(lanes, write, stop)
        elif files:
            _ChunkWriter(self.repo, tree, stats, progress, meta, workers, files_out, read_back).write(files)
        for entry in links:
            rel = entry_name(entry.path)
            parent_fd, name = tree.symlink(rel, entry.target)
            try:
                meta.apply_link(parent_fd, name, entry)
            finally:
                tree.release(split_parent(rel)[0])
            stats.symlinks += 1
        if read_back is not None:
            read_back.written(tree, files + links)


def _first_span(work: list[Entry] | tuple[_OpenFile, str, int, int], span_of: dict[str, int]) -> int:
    """The pack range a task begins in (-1: none planned, as for an empty file)."""
    if isinstance(work, list):
        chunks = work[0].chunks if work else []
        return span_of.get(chunks[0], -1) if chunks else -1
    return span_of.get(work[1], -1)


def restore_lanes(files: list[Entry]) -> list[list[Entry]]:
    """A planned batch split into ``LANES`` lanes written side by side: its files of
    ``LANE_FROM`` or more spread over the lanes by size (a file is in one lane only), every
    other file in the first. One lane when fewer than two files are that large, or on one
    core."""
    large = sorted((f for f in files if f.size >= LANE_FROM), key=lambda f: f.size, reverse=True)
    if len(large) < 2 or (os.cpu_count() or 1) < 2:
        return [files]
    split: list[list[Entry]] = [[f for f in files if f.size < LANE_FROM]] + [[] for _ in range(LANES - 1)]
    loads = [sum(f.size for f in split[0])] + [0] * (LANES - 1)
    for entry in large:
        k = loads.index(min(loads))
        split[k].append(entry)
        loads[k] += entry.size
    return [lane for lane in split if lane]


def _in_lanes(
    lanes: list[list[Entry]], write: Callable[[list[Entry], bool], None], stop: threading.Event
) -> None:
    """``write`` each lane, the first in this thread (where a Ctrl-C lands), the others each
    in a thread of their own; the first failure anywhere sets ``stop``, which ends the
    others' work too (a lane not begun yet does nothing). Every lane has ended when this
    returns or raises."""
    assert len(lanes) > 1, "one lane is written without threads"

    def run(lane: list[Entry], first: bool) -> None:
        if stop.is_set():
            return
        try:
            write(lane, first)
        except BaseException:
            stop.set()  # now, not when the first lane is done and asks for this one's result
            raise

    with ThreadPoolExecutor(max_workers=len(lanes) - 1, thread_name_prefix="restore-lane") as pool:
        try:
            others = [pool.submit(run, lane, False) for lane in lanes[1:]]
            run(lanes[0], True)
            for other in others:
                other.result()
        except BaseException:
            stop.set()
            raise


def _small_files_expected(recorded: SnapshotStats | None) -> int:
    """The snapshot's files when its totals say they are small on average (its writer
    processes then start while the tree is read), else 0 (they start when needed)."""
    if recorded is None or recorded.bytes >= recorded.files * SMALL_FILE:
        return 0
    return recorded.files


class UnsafePath(RestoreError):
    """A snapshot names a path that would leave the target (only a forged tree does)."""


def entry_name(path: str) -> str:
    """A tree path as a normalised relative name ("a/b") that cannot escape the target."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafePath(f"refusing unsafe path {path!r} in snapshot")
    return "/".join(parts)  # no Path: this runs twice for every file restored


def _restore_failure(tree: TargetDir, target: Path, exc: OSError, stats: RestoreStats) -> RestoreError:
    """One line for a restore the filesystem stopped; on a full disk, what it wrote is gone."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in DISK_FULL:
        removed = tree.take_back()
        return RestoreError(
            f"no space left on the filesystem of {target} after {readable_size(stats.bytes)}; "
            f"removed the {removed} files and directories this restore had created",
            hint="free space or restore elsewhere, then run the restore again",
        )
    return RestoreError(f"cannot write into {target}{where}: {exc.strerror or exc}")


def check_space(
    target: Path,
    entries: Callable[[], Iterator[Entry]],
    force: bool,
    recorded: SnapshotStats | None = None,
) -> int:
    """Refuse up front an unsafe path, or a target whose filesystem obviously cannot hold
    the files; returns the files' bytes. One pass over ``entries`` (two with ``force`` when
    short: files this restore replaces give their space back).

    With the snapshot's ``recorded`` totals (a whole snapshot into an empty target), a
    filesystem with room for them even if every file and directory wasted a block skips
    the pass: it decodes every tree document once more, a fifth of a restore of small
    files. Totals that lie only bring the full-disk path (what was written is taken back);
    an unsafe path, or a tree document that cannot be read, is then refused as it comes
    and the target emptied again."""
    free, block = free_space(target)
    if recorded is not None and recorded.files:
        worst = recorded.bytes + (recorded.files + recorded.dirs) * block
        if worst <= free:
            return recorded.bytes
    needed = total = 0
    for entry in entries():
        entry_name(entry.path)  # refuse an unsafe path before anything is written
        if entry.type == "file":
            needed += rounded(entry.size, block)
            total += entry.size
    if needed > free and force:
        needed -= _replaced_bytes(target, (e for e in entries() if e.type == "file"), block)
    refuse_short_space(target, needed, free)
    return total


def _replaced_bytes(target: Path, files: Iterable[Entry], block: int) -> int:
    total = 0
    for entry in files:
        try:
            st = os.lstat(target / safe_relative(entry.path))
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            total += rounded(st.st_size, block)
    return total


class _Metadata:
    """Modes, owners and times, applied through descriptors or without following links.
    Without owners (not root) setuid/setgid bits are dropped: they would grant the
    restoring user's privileges, not the original owner's."""

    def __init__(self, chown: bool, mode_of: Callable[[Entry], int] | None) -> None:
        self.chown = chown
        self.mode_of = mode_of
        self.mask = 0o7777 if chown else 0o1777

    def mode(self, entry: Entry) -> int:
        mode = self.mode_of(entry) if self.mode_of is not None else entry.mode
        return mode & self.mask

    def owner(self, entry: Entry) -> tuple[int, int]:
        """(uid, gid) to give the restored file; -1 for what is left as it is."""
        if not self.chown or entry.uid is None:
            return -1, -1
        return entry.uid, entry.gid if entry.gid is not None else -1

    def apply_fd(self, fd: int, entry: Entry) -> None:
        apply_file_metadata(fd, self.mode(entry), *self.owner(entry), entry.mtime_ns)

    def apply_link(self, parent_fd: int, name: str, entry: Entry) -> None:
        if self.chown and entry.uid is not None:
            try:
                os.chown(
                    name,
                    entry.uid,
                    entry.gid if entry.gid is not None else -1,
                    dir_fd=parent_fd,
                    follow_symlinks=False,
                )
            except OSError:
                pass
        os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent_fd, follow_symlinks=False)


class _ChunkWriter:
    """Writes files chunk by chunk at known offsets, in parallel across and within files.

    One bounded pool does every chunk of every file: a 1 GiB relation file restores as fast
    as a thousand small ones, and no per-file pools fight for the interpreter. Files are
    opened when their first chunk is scheduled and closed by whichever worker writes their
    last, so open descriptors stay bounded by the in-flight window.

    Each chunk is authenticated and checked against its keyed BLAKE3 id as it is read, and
    the authenticated tree lists every file's chunk ids in order, so a file assembled from
    verified chunks is byte for byte the file that was backed up: hashing it again (the
    recorded SHA-256) would add CPU, not assurance. The recorded sizes are still checked.
    """

    def __init__(
        self,
        repo: RepoHandle,
        tree: TargetDir,
        stats: RestoreStats,
        progress: ProgressSink,
        meta: _Metadata,
        workers: int,
        files_out: WriterSlot | None = None,
        read_back: ReadBack | None = None,
        *,
        lock: threading.Lock | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """``lock`` and ``stop``: shared by the writers of lanes (``_in_lanes``), which count
        into one ``stats`` and all stop at the first failure of any."""
        self.repo = repo
        self.tree = tree
        self.files_out = files_out
        self.read_back = read_back
        self.stats = stats
        self.progress = progress
        self.meta = meta
        self.workers = max(2, min(workers, (os.cpu_count() or 2) + 1))
        self._lock = lock if lock is not None else threading.Lock()
        self._stop = stop
        self._failed: threading.Event | None = None  # the running _write's
        self._open: dict[str, _OpenFile] = {}
        self._flusher: ThreadPoolExecutor | None = None
        self._flushes: list[Future[None]] = []
        self._blobs: PackRanges | None = None

    def write(self, files: list[Entry]) -> None:
        # Chunks are written in the order their packs are read (a file's chunks land at
        # known offsets, so any order will do): each pack range is fetched once, used whole
        # and dropped, instead of one request per chunk or ranges evicted and read again.
        # Files of one chunk go in batches (see _write_whole) at their place in that order:
        # a batch written first while other workers raced through the big files' ranges
        # kept its ranges needed long after they were evicted, and read them again.
        chunks = [c for f in files for c in f.chunks]
        locations = known_locations(self.repo, chunks)  # one index lookup a chunk, for both plans
        tasks = _pack_order(files, span_numbers(self.repo, chunks, locations))
        order = [files[f].chunks[i] for f, i in tasks]
        # in span order a span is used whole at once: a few held suffice (prefetch included)
        try:
            with PackRanges(self.repo, order, resident=4, fetchers=2, locations=locations) as self._blobs:
                self._write(files, tasks)
        finally:
            self._blobs = None  # the batch's plan (every chunk's location) is not kept past it

    def _write(self, files: list[Entry], tasks: list[tuple[int, int]]) -> None:
        window = threading.Semaphore(self.workers * 4)  # tasks in flight at once
        # a writer process for the small files, when there are enough of them to pay for it
        small_files = sum(1 for e in files if len(e.chunks) == 1 and e.size < SMALL_FILE)
        out = None
        if self.files_out is not None and small_files >= WRITER_FROM:
            out = self.files_out.get(small_files)
        futures: list[Future[None]] = []
        failed = self._stop if self._stop is not None else threading.Event()
        self._failed = failed
        # the small-file lane (one thread, and the writer process) falls behind the pool:
        # its batches in flight, by the pack range each begins in, are kept within ``lag``
        # ranges of the work handed out, or the ranges it still reads take the room the
        # pool's next ranges come into, and those are fetched twice
        # (from S3 only: on a local disk a range is a pread, read again for less than the wait)
        behind: deque[tuple[int, Future[None]]] = deque()
        span_of = self._blobs.span_of if self._blobs is not None else {}
        lag = max(1, (self._blobs.resident if self._blobs is not None else 4) - 2)
        keep_close = not on_local_disk(self.repo)

        def settle(future: Future[None]) -> None:
            window.release()
            if future.exception() is not None:
                failed.set()

        try:
            with (
                ThreadPoolExecutor(max_workers=2, thread_name_prefix="flush") as self._flusher,
                ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="restore") as pool,
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-small") as small,
            ):
                try:
                    for entry in files:
                        if not entry.chunks:
                            self._start(entry, direct=True)  # an empty file is done at once
                    for work in self._work(files, tasks, writer=out is not None):
                        if failed.is_set():
                            break
                        span = _first_span(work, span_of)
                        while behind and (behind[0][1].done() or span - behind[0][0] > lag):
                            waited = behind.popleft()[1]
                            wait([waited])
                            if waited.exception() is not None:
                                failed.set()  # now: its callback may not have run yet
                        if failed.is_set():
                            break
                        window.acquire()
                        if isinstance(work, list):
                            small_only = all(e.size < SMALL_FILE for e in work)
                            if small_only and out is not None:
                                future = small.submit(self._send_whole, out, work, failed)
                            else:
                                lane = small if small_only else pool
                                future = lane.submit(self._write_whole, work, failed)
                            if small_only and keep_close:
                                behind.append((span, future))
                        else:
                            future = pool.submit(self._write_chunk, *work)
                        future.add_done_callback(settle)
                        futures.append(future)
                except BaseException:  # Ctrl-C, SIGTERM, an error here: queued batches stop at once
                    failed.set()
                    raise
                for future in futures:
                    future.result()
                if out is not None:
                    out.drain()  # its files are all made before the batch's links and directories
            for future in self._flushes:
                future.result()
        finally:
            self._flusher = None
            # each flush's future holds this writer (its callback): kept, they made a cycle
            # that held the batch's plan until the collector's next full pass
            self._flushes.clear()
            for handle in list(self._open.values()):
                self._discard(handle)
            self._open.clear()

    def _write_whole(self, batch: list[Entry], failed: threading.Event) -> None:
        """Files of at most one chunk, start to finish in one worker: creating a file is a
        syscall as costly as writing 2 KB into it, so it runs in the pool too, and a task
        per file (a Future, a lock, a queue hand-off) would cost more than the file."""
        files = size = 0
        try:
            for entry in batch:
                if failed.is_set():
                    return
                if entry.size >= FLUSH_FROM:  # flushed as it completes: the handle's way
                    handle = self._start(entry, direct=True)
                    if handle is not None:
                        for task in self._chunks_of(handle):
                            self._write_chunk(*task)
                    continue
                self._write_one(entry)
                files, size = files + 1, size + entry.size
        finally:
            self.progress.advance(size)
            with self._lock:
                self.stats.files += files
                self.stats.verified += files
                self.stats.bytes += size

    def _send_whole(self, out: FileWriters, batch: list[Entry], failed: threading.Event) -> None:
        """Small files of one chunk, verified here and made by the writer process: this
        process's core reads, checks and plans, the other one creates files."""
        specs: list[FileSpec] = []
        sent: list[tuple[Entry, bytes]] = []
        made = None  # the parent directory made for the file before (a batch is mostly one)
        for entry, data in zip(batch, small_contents(self._blobs, self.repo, batch), strict=True):
            if failed.is_set():
                return
            parent, name = split_parent(entry_name(entry.path))
            if parent != made:
                self.tree.acquire(parent)  # made if missing: the writer never makes directories
                self.tree.release(parent)
                made = parent
            specs.append((parent, name, data, self.meta.mode(entry), *self.meta.owner(entry), entry.mtime_ns))
            sent.append((entry, data))
        if specs:
            out.send(specs, partial(self._written, sent), failed, read_back=self.read_back is not None)

    def _written(
        self, sent: list[tuple[Entry, bytes]], written: int, existing: list[int], held: list[int]
    ) -> None:
        """The writer's reply: what it found already in place (planted during the restore),
        or read back unlike what it was sent, is replaced here, the usual way; what it made
        (and, for ``read_back``, read back equal: ``held``) is handed on."""
        if self.read_back is not None:
            for k in held:
                self.read_back.read_back(*sent[k])
        if not existing and written == len(sent):  # the usual reply: all made, counted in one go
            self._count_made(sum(len(data) for _, data in sent), len(sent))
            return
        replaced = set(existing)
        processed = range(written + len(existing))
        done = [k for k in processed if k not in replaced] if replaced else list(processed)
        try:
            for k in existing:
                self._write_data(*sent[k])
                done.append(k)
        finally:  # what was made counts, even when a replacement here failed
            self._count_made(sum(len(sent[k][1]) for k in done), len(done))

    def _count_made(self, size: int, files: int) -> None:
        self.progress.advance(size)
        with self._lock:
            self.stats.files += files
            self.stats.verified += files
            self.stats.bytes += size

    def _write_one(self, entry: Entry) -> None:
        """A small file of one chunk, in one go: no handle, no shared bookkeeping (most of a
        restore of small files was that bookkeeping)."""
        [data] = small_contents(self._blobs, self.repo, [entry])
        self._write_data(entry, data)

    def _write_data(self, entry: Entry, data: bytes) -> None:
        rel, parent, dir_fd, name, tmp, fd = self._open_in_target(entry, direct=True)
        try:
            try:
                try:
                    write_all(fd, data)
                    self.meta.apply_fd(fd, entry)
                finally:
                    os.close(fd)
                if tmp == name:  # created under its name (_create)
                    self.tree.record(rel, False)
                else:
                    self.tree.install(dir_fd, tmp, name, rel)
            except BaseException:
                _unlink_quietly(dir_fd, tmp)
                raise
        finally:
            self.tree.release(parent)

    def _work(
        self, files: list[Entry], tasks: list[tuple[int, int]], writer: bool = False
    ) -> Iterator[list[Entry] | tuple[_OpenFile, str, int, int]]:
        """The tasks in the planned order: runs of files of one chunk as batches, every other
        chunk as (file, chunk id, offset, length); a file of several chunks is opened at its
        first and closed by whichever worker writes its last. For the ``writer`` process,
        small files go in batches of their own, up to ``SEND_FILES`` files and
        ``SEND_BYTES``; larger files of one chunk keep the workers' batches."""
        handles: dict[int, tuple[_OpenFile, list[int]]] = {}  # file -> (handle, [chunks left])
        batch: list[Entry] = []
        small: list[Entry] = []  # for the writer
        small_bytes = 0
        small_from = -1  # the pack range the writer's batch began in
        span_of = self._blobs.span_of if self._blobs is not None else {}
        for f, i in tasks:
            entry = files[f]
            span = span_of.get(entry.chunks[i], small_from)
            if small and span > small_from:
                # sent once the tasks move past its range: a batch filling up over many
                # ranges kept each of them held for its first files, and the workers ahead
                # fetched and dropped the few ranges left to them again and again
                yield small
                small, small_bytes = [], 0
            if len(entry.chunks) == 1:
                if writer and entry.size < SMALL_FILE:
                    if not small:
                        small_from = span
                    small.append(entry)
                    small_bytes += entry.size
                    if len(small) == SEND_FILES or small_bytes >= SEND_BYTES:
                        yield small
                        small, small_bytes = [], 0
                    continue
                batch.append(entry)
                if len(batch) == BATCH_FILES:
                    yield batch
                    batch = []
                continue
            if batch:
                yield batch
                batch = []
            if f not in handles:
                opened = self._start(entry)
                assert opened is not None  # only files with chunks have tasks
                handles[f] = (opened, [len(opened.lengths)])
            handle, left = handles[f]
            yield handle, handle.entry.chunks[i], handle.offsets[i], handle.lengths[i]
            left[0] -= 1
            if left[0] == 0:
                del handles[f]
        if batch:
            yield batch
        if small:
            yield small

    @staticmethod
    def _chunks_of(handle: _OpenFile) -> Iterator[tuple[_OpenFile, str, int, int]]:
        offset = 0
        for chunk_id, length in zip(handle.entry.chunks, handle.lengths, strict=True):
            yield handle, chunk_id, offset, length
            offset += length

    def _start(self, entry: Entry, direct: bool = False) -> _OpenFile | None:
        lengths = [self._raw_length(c) for c in entry.chunks]
        if sum(lengths) != entry.size:
            raise IntegrityError(f"chunks of {entry.path} do not add up to its recorded size")
        rel, parent, dir_fd, name, tmp, fd = self._open_in_target(entry, direct)
        offsets = list(accumulate(lengths, initial=0))[:-1]
        handle = _OpenFile(entry, rel, parent, dir_fd, name, tmp, fd, lengths, len(entry.chunks), offsets)
        if not entry.chunks:
            self._finish(handle)
            return None
        with self._lock:
            self._open[entry.path] = handle
        return handle

    def _open_in_target(self, entry: Entry, direct: bool) -> tuple[str, str, int, str, str, int]:
        """(rel, parent, parent's fd, name, name written, fd) of a new file for ``entry``;
        the parent stays acquired for the caller to release."""
        rel = entry_name(entry.path)
        parent, name = split_parent(rel)
        dir_fd = self.tree.acquire(parent)
        try:
            tmp, fd = self._create(dir_fd, name, direct)
        except BaseException:
            self.tree.release(parent)
            raise
        return rel, parent, dir_fd, name, tmp, fd

    def _create(self, dir_fd: int, name: str, direct: bool) -> tuple[str, int]:
        """A file written in one go into a fresh target is created under its own name
        (exclusively, never through a link): a temp name and a rename are two more
        directory operations, as costly as the 2 KB file. Anything already there (planted
        during the restore) sends it the usual way. Failures unlink it (_discard)."""
        if direct and self.tree.fresh:
            try:
                return name, os.open(name, TEMP_FLAGS, 0o600, dir_fd=dir_fd)
            except FileExistsError:
                pass
        return self.tree.open_temp(dir_fd, name)

    def _raw_length(self, chunk_id: str) -> int:
        index = self.repo.index()
        loc = index.get(chunk_id)
        if loc is None:
            index = self.repo.index(refresh=True)
            loc = index.get(chunk_id)
        if loc is None:
            raise IntegrityError(f"chunk {chunk_id[:16]} is missing from the repository")
        if index.listed_elsewhere(chunk_id) and len({o.raw_length for o in index.locations(chunk_id)}) > 1:
            # Index files disagree on its size (one misdirects it): only the verified bytes
            # say. read_blob puts the location that verified first.
            return len(self.repo.read_blob(chunk_id))
        return loc.raw_length

    def _write_chunk(self, handle: _OpenFile, chunk_id: str, offset: int, length: int) -> None:
        data = self._blobs.get(chunk_id) if self._blobs is not None else self.repo.read_blob(chunk_id)
        if len(data) != length:  # the offsets of the file's later chunks depend on it
            raise IntegrityError(f"chunk {chunk_id[:16]} of {handle.entry.path} has an unexpected length")
        view = memoryview(data)
        while view:
            written = os.pwrite(handle.fd, view, offset)
            view, offset = view[written:], offset + written
        self.progress.advance(len(data))
        with self._lock:
            handle.remaining -= 1
            done = handle.remaining == 0
            if done:
                self._open.pop(handle.entry.path, None)
        if done:
            if handle.entry.size >= FLUSH_FROM and self._flusher is not None:
                future = self._flusher.submit(self._finish, handle, True)
                future.add_done_callback(self._flushed)
                with self._lock:
                    self._flushes.append(future)
            else:
                self._finish(handle)

    def _flushed(self, future: Future[None]) -> None:
        """A file that failed to finish (its fdatasync, its rename) stops the work still
        queued at once; the error itself is raised when the flushes are collected."""
        if self._failed is not None and not future.cancelled() and future.exception() is not None:
            self._failed.set()

    def _finish(self, handle: _OpenFile, flush: bool = False) -> None:
        """Metadata through the descriptor (a rename keeps it), then the temp file takes the
        name, replacing whatever held it."""
        try:
            if flush:
                os.fdatasync(handle.fd)
            self.meta.apply_fd(handle.fd, handle.entry)
            os.close(handle.fd)
            handle.fd = -1
            if handle.tmp == handle.name:  # created under its name (_create)
                self.tree.record(handle.rel, False)
            else:
                self.tree.install(handle.dir_fd, handle.tmp, handle.name, handle.rel)
        except BaseException:
            self._discard(handle)  # no longer in _open: nobody else cleans it up
            raise
        self.tree.release(handle.parent)
        with self._lock:
            self.stats.files += 1
            self.stats.verified += 1
            self.stats.bytes += handle.entry.size

    def _discard(self, handle: _OpenFile) -> None:
        if handle.fd >= 0:
            os.close(handle.fd)
            handle.fd = -1
        _unlink_quietly(handle.dir_fd, handle.tmp)
        self.tree.release(handle.parent)


def small_contents(blobs: PackRanges | None, repo: RepoHandle, entries: list[Entry]) -> list[bytes]:
    """The verified content of files of one chunk each (``blobs.get_many`` when planned);
    a chunk's verified length is its file's size (one it does not fill is refused before
    anything is created)."""
    ids = [entry.chunks[0] for entry in entries]
    found = blobs.get_many(ids) if blobs is not None else [repo.read_blob(c) for c in ids]
    for entry, data in zip(entries, found, strict=True):
        if len(data) != entry.size:
            raise IntegrityError(
                f"chunk {entry.chunks[0][:16]} of {entry.path} does not hold its recorded size"
            )
    return found


def _unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _pack_order(files: list[Entry], span_of: dict[str, int]) -> list[tuple[int, int]]:
    """(file number, chunk number) ordered by the pack range that holds the chunk. A file
    is open from its first chunk to its last, so files whose first chunk would find
    ``OPEN_FILES`` already open wait, whole, for a second pass in file order (their ranges
    are read again then): descriptors stay bounded whatever the layout of the packs."""
    last_span = len(span_of)  # chunks missing from the index fail when read, at the end
    uses = sorted(  # within a range, files of one chunk first: they run together as batches
        (
            (span_of.get(chunk_id, last_span), len(e.chunks) > 1, f, i)
            for f, e in enumerate(files)
            for i, chunk_id in enumerate(e.chunks)
        ),
    )
    remaining = [len(e.chunks) for e in files]
    first, deferred = set[int](), set[int]()
    open_now = 0
    ordered: list[tuple[int, int]] = []
    for _, _, f, i in uses:
        if f in deferred:
            continue
        if f not in first:
            if open_now >= OPEN_FILES:
                deferred.add(f)
                continue
            first.add(f)
            open_now += 1
        ordered.append((f, i))
        remaining[f] -= 1
        if remaining[f] == 0:
            open_now -= 1
    ordered += [(f, i) for f in sorted(deferred) for i in range(len(files[f].chunks))]
    return ordered


@dataclass
class _OpenFile:
    entry: Entry
    rel: str  # normalised path inside the target
    parent: str  # its directory, whose descriptor this file holds until it is done
    dir_fd: int
    name: str
    tmp: str
    fd: int
    lengths: list[int]
    remaining: int
    offsets: list[int]  # of each chunk in the file
