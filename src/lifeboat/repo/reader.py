"""Reading snapshots back: trees, verified file contents, parallel restores to a directory."""

from __future__ import annotations

import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from lifeboat.errors import IntegrityError, RestoreError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo.format import is_object_id
from lifeboat.repo.model import Entry, SnapshotInfo
from lifeboat.targetdir import (
    DISK_FULL,
    TargetDir,
    free_space,
    readable_size,
    refuse_short_space,
    rounded,
    split_parent,
)

if TYPE_CHECKING:
    from lifeboat.repo.repository import Repository

PREFETCH = 8
# Large restored files are flushed to disk as each completes, by two threads that only wait
# on the disk: the writeback overlaps the (CPU-bound) restore of the rest, and the server's
# own start-up sync of its data directory (1.1 s for a 4.4 GB cluster) finds little left.
FLUSH_FROM = 1 << 20


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    seconds: float = 0.0
    verified: int = 0
    failed: list[str] = field(default_factory=list)


def safe_relative(path: str) -> Path:
    """A tree path as a relative Path that cannot escape the restore target."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise RestoreError(f"refusing unsafe path {path!r} in snapshot")
    return Path(*parts)


def target_is_empty(target: Path) -> bool:
    return not target.exists() or (target.is_dir() and not any(target.iterdir()))


class SnapshotReader:
    def __init__(self, repo: Repository, info: SnapshotInfo) -> None:
        self.repo = repo
        self.info = info
        self._entries: list[Entry] | None = None

    def entries(self) -> list[Entry]:
        if self._entries is None:
            raw = b"".join(self.repo.read_blob(blob_id) for blob_id in self.info.tree)
            try:
                data = orjson.loads(raw)
                entries = [Entry.from_json(e) for e in data["entries"]]
            except (ValueError, KeyError, TypeError, AttributeError):
                raise IntegrityError(f"tree of snapshot {self.info.short_id} is damaged") from None
            if not all(isinstance(e.chunks, list) and all(map(is_object_id, e.chunks)) for e in entries):
                raise IntegrityError(f"tree of snapshot {self.info.short_id} has malformed chunk ids")
            self._entries = entries
        return self._entries

    def open(self, entry: Entry) -> Iterator[bytes]:
        """The file's bytes, chunk by chunk, each authenticated and id-checked."""
        if len(entry.chunks) <= 1:
            for chunk_id in entry.chunks:
                yield self.repo.read_blob(chunk_id)
            return
        with ThreadPoolExecutor(max_workers=min(PREFETCH, len(entry.chunks))) as pool:
            futures = []
            it = iter(entry.chunks)
            for chunk_id in it:
                futures.append(pool.submit(self.repo.read_blob, chunk_id))
                if len(futures) >= PREFETCH:
                    break
            for chunk_id in it:
                yield futures.pop(0).result()
                futures.append(pool.submit(self.repo.read_blob, chunk_id))
            for future in futures:
                yield future.result()

    def read(self, entry: Entry) -> bytes:
        return b"".join(self.open(entry))

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
    ) -> RestoreStats:
        """Write the snapshot's tree into ``target``, every chunk authenticated and id-checked.

        Nothing outside ``target`` is ever written: links already in it are replaced, never
        followed (see lifeboat.targetdir). With ``force`` the tree is merged into what is
        there: the snapshot's entries replace whatever holds their names (a directory where
        the snapshot has a file is removed, and the reverse); nothing else is deleted.
        Owners, and with them setuid/setgid bits, are restored only when running as root.
        On a full disk everything this restore created is removed again."""
        import time

        started = time.monotonic()
        fresh = target_is_empty(target)
        if not force and not fresh:
            raise RestoreError(
                f"target {target} is not empty", hint="choose an empty directory or pass --force"
            )
        # One entry per path (the last wins): older snapshots could hold two roots with
        # one basename, and two writers of one path would race on its temp file.
        entries = list({e.path: e for e in self.entries() if select is None or select(e)}.values())
        for entry in entries:
            entry_name(entry.path)  # refuse an unsafe path before anything is written
        do_chown = os.geteuid() == 0 if chown is None else chown
        meta = _Metadata(do_chown, mode_of)
        files = [e for e in entries if e.type == "file"]
        check_space(target, files, force)
        progress.start(sum(e.size for e in files))
        tree = TargetDir(target, fresh=fresh)
        stats = RestoreStats()
        try:
            try:
                self._write_tree(tree, entries, files, stats, progress, meta, workers)
            except OSError as exc:
                raise _restore_failure(tree, target, exc, stats) from None
        finally:
            tree.close()
        stats.seconds = round(time.monotonic() - started, 3)
        return stats

    def _write_tree(
        self,
        tree: TargetDir,
        entries: list[Entry],
        files: list[Entry],
        stats: RestoreStats,
        progress: ProgressSink,
        meta: _Metadata,
        workers: int,
    ) -> None:
        dirs = [e for e in entries if e.type == "dir"]
        for entry in dirs:
            rel = entry_name(entry.path)
            tree.acquire(rel)
            tree.release(rel)
            stats.dirs += 1
        _ChunkWriter(self.repo, tree, stats, progress, meta, workers).write(files)
        for entry in entries:
            if entry.type == "symlink":
                rel = entry_name(entry.path)
                parent_fd, name = tree.symlink(rel, entry.target)
                try:
                    meta.apply_link(parent_fd, name, entry)
                finally:
                    tree.release(split_parent(rel)[0])
                stats.symlinks += 1
        for entry in sorted(dirs, key=lambda e: e.path.count("/"), reverse=True):
            rel = entry_name(entry.path)
            fd = tree.acquire(rel)
            try:
                meta.apply_fd(fd, entry)
            finally:
                tree.release(rel)


def entry_name(path: str) -> str:
    """A tree path as a normalised relative name ("a/b") that cannot escape the target."""
    return "/".join(safe_relative(path).parts)


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


def check_space(target: Path, files: list[Entry], force: bool) -> None:
    """Refuse up front when the target's filesystem obviously cannot hold the files."""
    free, block = free_space(target)
    needed = sum(rounded(e.size, block) for e in files)
    if needed > free and force:  # files this restore replaces give their space back
        needed -= _replaced_bytes(target, files, block)
    refuse_short_space(target, needed, free)


def _replaced_bytes(target: Path, files: list[Entry], block: int) -> int:
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

    def apply_fd(self, fd: int, entry: Entry) -> None:
        if self.chown and entry.uid is not None:
            try:  # before the chmod: a chown clears setuid/setgid
                os.fchown(fd, entry.uid, entry.gid if entry.gid is not None else -1)
            except OSError:
                pass  # the user may not exist on this host; contents matter more
        os.fchmod(fd, self.mode(entry))
        os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))

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
        repo: Repository,
        tree: TargetDir,
        stats: RestoreStats,
        progress: ProgressSink,
        meta: _Metadata,
        workers: int,
    ) -> None:
        self.repo = repo
        self.tree = tree
        self.stats = stats
        self.progress = progress
        self.meta = meta
        self.workers = max(2, min(workers, (os.cpu_count() or 2) + 1))
        self._lock = threading.Lock()
        self._open: dict[str, _OpenFile] = {}
        self._flusher: ThreadPoolExecutor | None = None
        self._flushes: list[Future[None]] = []

    def write(self, files: list[Entry]) -> None:
        window = threading.Semaphore(self.workers * 4)  # chunks held in memory at once
        futures: list[Future[None]] = []
        failed = threading.Event()

        def settle(future: Future[None]) -> None:
            window.release()
            if future.exception() is not None:
                failed.set()

        try:
            with (
                ThreadPoolExecutor(max_workers=2, thread_name_prefix="flush") as self._flusher,
                ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="restore") as pool,
            ):
                for handle, chunk_id, offset, length in self._tasks(files):
                    if failed.is_set():
                        break
                    window.acquire()
                    future = pool.submit(self._write_chunk, handle, chunk_id, offset, length)
                    future.add_done_callback(settle)
                    futures.append(future)
                for future in futures:
                    future.result()
            for future in self._flushes:
                future.result()
        finally:
            self._flusher = None
            for handle in list(self._open.values()):
                self._discard(handle)
            self._open.clear()

    def _tasks(self, files: list[Entry]) -> Iterator[tuple[_OpenFile, str, int, int]]:
        """(file, chunk id, offset, length), round-robin over as many files as there are workers:
        writers on one file queue on its inode lock (the kernel spins on it), so concurrent
        chunks should belong to different files whenever there are several."""
        pending = iter(files)
        active: deque[Iterator[tuple[_OpenFile, str, int, int]]] = deque()
        while True:
            while len(active) < self.workers:
                entry = next(pending, None)
                if entry is None:
                    break
                handle = self._start(entry)
                if handle is not None:
                    active.append(self._chunks_of(handle))
            if not active:
                return
            chunks = active.popleft()
            task = next(chunks, None)
            if task is not None:
                yield task
                active.append(chunks)

    @staticmethod
    def _chunks_of(handle: _OpenFile) -> Iterator[tuple[_OpenFile, str, int, int]]:
        offset = 0
        for chunk_id, length in zip(handle.entry.chunks, handle.lengths, strict=True):
            yield handle, chunk_id, offset, length
            offset += length

    def _start(self, entry: Entry) -> _OpenFile | None:
        lengths = [self._raw_length(c) for c in entry.chunks]
        if sum(lengths) != entry.size:
            raise IntegrityError(f"chunks of {entry.path} do not add up to its recorded size")
        rel = entry_name(entry.path)
        parent, name = split_parent(rel)
        dir_fd = self.tree.acquire(parent)
        try:
            tmp, fd = self.tree.open_temp(dir_fd, name)
        except BaseException:
            self.tree.release(parent)
            raise
        handle = _OpenFile(entry, rel, parent, dir_fd, name, tmp, fd, lengths, len(entry.chunks))
        if not entry.chunks:
            self._finish(handle)
            return None
        with self._lock:
            self._open[entry.path] = handle
        return handle

    def _raw_length(self, chunk_id: str) -> int:
        loc = self.repo.index().get(chunk_id) or self.repo.index(refresh=True).get(chunk_id)
        if loc is None:
            raise IntegrityError(f"chunk {chunk_id[:16]} is missing from the repository")
        return loc.raw_length

    def _write_chunk(self, handle: _OpenFile, chunk_id: str, offset: int, length: int) -> None:
        data = self.repo.read_blob(chunk_id)
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
                with self._lock:
                    self._flushes.append(future)
            else:
                self._finish(handle)

    def _finish(self, handle: _OpenFile, flush: bool = False) -> None:
        """Metadata through the descriptor (a rename keeps it), then the temp file takes the
        name, replacing whatever held it."""
        try:
            if flush:
                os.fdatasync(handle.fd)
            self.meta.apply_fd(handle.fd, handle.entry)
            os.close(handle.fd)
            handle.fd = -1
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
        try:
            os.unlink(handle.tmp, dir_fd=handle.dir_fd)
        except FileNotFoundError:
            pass
        self.tree.release(handle.parent)


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
