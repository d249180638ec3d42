"""A backup session: chunk, deduplicate, encrypt, pack and upload; commit a snapshot last.

Nothing becomes visible until ``commit`` writes the snapshot header, which is the last
write. A process killed at any moment leaves complete packs (and usually their index);
the next session indexes complete orphan packs and reuses their blobs.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lifeboat import clock, memory
from lifeboat.errors import LifeboatError, NotFoundError, SourceChanged, StorageError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.readahead import AheadFile
from lifeboat.repo.chunking import encode_payload, read_blocks
from lifeboat.repo.consolidate import consolidate_quietly, index_files_max, small_index_files
from lifeboat.repo.format import BLOB_DATA, BLOB_TREE, index_name, pack_name, snapshot_name
from lifeboat.repo.idtable import IdTable
from lifeboat.repo.immutability import ensure_retention, lockable, objects_of
from lifeboat.repo.index import INDEX_FILE_BLOBS, Index, PackEntry, write_index
from lifeboat.repo.keyring import Keyring
from lifeboat.repo.locks import RepoLock
from lifeboat.repo.model import PARENT_CACHE_REJECTED, Entry, SnapshotInfo, SnapshotStats
from lifeboat.repo.packer import Packer
from lifeboat.repo.parents import ParentCache, ParentStream, ParentStreamWriter
from lifeboat.repo.snapshots import encode_snapshot
from lifeboat.repo.trees import (
    TREE_FORMAT_PER_DIRECTORY,
    TREE_FORMAT_SINGLE,
    TreeStream,
    decode_file_entry,
    document_pieces,
    encoded_entry,
)

if TYPE_CHECKING:
    from lifeboat.repo.handle import RepoHandle

# A backup writes an index file every this many packs, or sooner at INDEX_FILE_BLOBS blobs
INDEX_FLUSH_PACKS = 16
PACK_BUFFERS_MAPPED = 4 << 20  # above a chunk (1 MiB by default), below a pack (8 MiB): see packs_mapped

DESCRIBED_MAX = 16 << 20  # read_file(describe=...) holds at most this much of one file


def _file_entry(
    path: str,
    stored: tuple[list[str], int, str],
    mode: int,
    mtime_ns: int,
    uid: int | None,
    gid: int | None,
    meta: dict[str, Any] | None,
) -> Entry:
    """A file's entry from what storing its content gave: (chunk ids, size, SHA-256 hex)."""
    chunks, size, sha = stored
    return Entry(
        path=path,
        type="file",
        size=size,
        mode=mode,
        mtime_ns=mtime_ns,
        uid=uid,
        gid=gid,
        sha256=sha,
        chunks=chunks,
        meta=dict(meta or {}),
    )


def _open_regular(source: str | Path) -> IO[bytes]:
    """A walked file opened as the walk saw it: never through a link swapped in since
    (O_NOFOLLOW: ELOOP), never waiting on a pipe (O_NONBLOCK: EAGAIN when read); a
    directory put in its place fails FileIO's own check (EISDIR)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(source, flags | os.O_NONBLOCK)
    except BlockingIOError:  # a lease another holds (Samba, NFS): wait for it, as a plain open would
        if not stat.S_ISREG(os.lstat(source).st_mode):
            raise
        fd = os.open(source, flags)
    try:
        return open(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _replaced_in_place(fh: IO[bytes], source: str | Path) -> bool:
    """Whether the file opened is the one at ``source`` itself (one renamed over the walked
    file: read) and was reached through no link (a directory above swapped for one: never
    read). The kernel's own name for the descriptor says where the open went; resolving
    the path again afterwards could be raced back. Without /proc: not taken. Asked only
    when the file opened is not the one walked, so its cost is rare."""
    try:
        opened = os.readlink(f"/proc/self/fd/{fh.fileno()}")
    except OSError:
        return False
    return opened == os.path.abspath(source)


def _source_changed(exc: OSError, source: str | Path) -> bool:
    """Whether an error opening or reading a walked file says it is no longer the regular
    file the walk saw: gone (ENOENT, ENOTDIR: a directory above it replaced), a link put
    in its place (ELOOP), a directory (EISDIR) or a pipe with nothing to read (EAGAIN).
    Those and ENXIO (a socket) are taken only from the source's own path: the
    repository's errors are never mistaken for it."""
    if exc.errno in (errno.EISDIR, errno.EAGAIN):
        return True
    own = exc.filename is not None and os.fspath(exc.filename) == os.fspath(source)
    return own and exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENXIO)  # ENXIO: a socket


def _read_at_most(fh: IO[bytes], limit: int) -> bytes:
    """Up to ``limit`` bytes, read into a buffer of the file's size: ``read(limit)`` sizes
    its buffer by the limit (16 MiB for a 2 KB key file: 15 us of allocation a file)."""
    size = fh.size if isinstance(fh, AheadFile) else os.fstat(fh.fileno()).st_size
    content = fh.read(min(size, limit - 1) + 1)  # one more: has it grown since?
    if size < limit - 1 and len(content) > size:
        content += fh.read(limit - len(content))
    return content


class KnownBlobs:
    """The blob ids a run need not store again: the repository's index as it was loaded,
    and what the run stored since. The index is asked, not copied; what the run stored is
    held as raw ids (a first backup of a million small files stores a million blobs: as a
    set of hex strings they took 143 MB, here 32)."""

    def __init__(self, index: Index | None = None) -> None:
        self._index = index
        self._new = IdTable()

    def __contains__(self, blob_id: object) -> bool:
        # the index first: an unchanged backup finds every chunk there, with one lookup
        return (self._index is not None and blob_id in self._index) or blob_id in self._new

    def holds_all(self, blob_ids: Sequence[str]) -> bool:
        """Whether every one of the ids is known (one call for a file's chunks)."""
        if self._index is not None and self._index.holds_all(blob_ids):
            return True  # an unchanged file's chunks, all in the index: the common case
        missing = self._index.missing(blob_ids) if self._index is not None else blob_ids
        return not missing or not self._new.missing(missing)

    def add_if_new(self, blob_id: str) -> bool:
        """Counts a blob as known; whether it was not known before. One lookup in what the
        run stored, where ``in`` and then ``add`` took two (a first backup of small files
        stores a blob per file)."""
        index = self._index
        if index is not None and len(index) and blob_id in index:  # a first backup's is empty
            return False
        return self._new.put(blob_id)


class BlobWriter:
    """Stores blobs once: the shared core of backup sessions and ref uploads."""

    def __init__(
        self, repo: RepoHandle, known: KnownBlobs | None, workers: int, keyring: Keyring | None = None
    ) -> None:
        self.repo = repo
        # whose packs these blobs go into: the recovery key's, or the escrow key's (key material)
        self.keyring = keyring or repo.keyring
        self.known = known if known is not None else KnownBlobs()
        self._lock = threading.Lock()
        self._pending_index: list[PackEntry] = []
        self._pending_blobs = 0  # listed by _pending_index
        self.index_files: dict[str, int] = {}  # index file id -> how many blobs it lists
        self.packs_written: list[str] = []
        self.stats = SnapshotStats()
        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunk")
        self._inflight = threading.Semaphore(workers * 3)
        seal = repo.metadata.table_seal
        self.packer = Packer(repo.storage, self.keyring, repo.pack_size, self._on_uploaded, seal_table=seal)
        # Trees get packs of their own (as restic's): a restore or check reads a snapshot's
        # trees from a few packs, not a ranged GET in a data pack per directory.
        self.tree_packer = Packer(
            repo.storage, self.keyring, repo.pack_size, self._on_uploaded, open_packs=1, seal_table=seal
        )

    def _on_uploaded(self, entry: PackEntry, size: int) -> None:
        batch: list[PackEntry] = []
        with self._lock:
            self.packs_written.append(entry["id"])
            self._pending_index.append(entry)
            self._pending_blobs += len(entry["blobs"])
            if len(self._pending_index) >= INDEX_FLUSH_PACKS or self._pending_blobs >= INDEX_FILE_BLOBS:
                batch, self._pending_index, self._pending_blobs = self._pending_index, [], 0
        if batch:
            self._write_index(batch)

    def _write_index(self, packs: list[PackEntry]) -> None:
        written = write_index(self.repo.storage, packs, self.repo.metadata, self.repo.index_cache)
        with self._lock:
            self.index_files.update(written)

    def store(self, data: bytes, btype: str = BLOB_DATA) -> str:
        """Store one blob unless the repository has it; return its id. Thread-safe."""
        blob_id = self.keyring.blob_id(data)
        with self._lock:
            self.stats.chunks += 1
            self.stats.bytes += len(data) if btype == BLOB_DATA else 0
            if not self.known.add_if_new(blob_id):
                return blob_id
        packer = self.tree_packer if btype == BLOB_TREE else self.packer
        stored = packer.add(blob_id, btype, encode_payload(data), len(data))
        with self._lock:
            self.stats.new_chunks += 1
            self.stats.new_bytes += len(data)
            self.stats.stored_bytes += stored
        return blob_id

    def submit(self, data: bytes, btype: str = BLOB_DATA) -> Future[str]:
        """Store asynchronously, bounding the blocks held in memory."""
        self._inflight.acquire()
        future = self.pool.submit(self.store, data, btype)
        future.add_done_callback(lambda _: self._inflight.release())
        return future

    def store_stream(
        self,
        stream: IO[bytes],
        chunk_size: int,
        progress: ProgressSink,
        digest: Any = None,
        *,
        sha256: bool = True,
    ) -> tuple[list[str], int, str]:
        """Chunk a stream in parallel; return (chunk ids, size, sha256 hex or "").

        A stream that fits in one block (most media objects, small files) is stored in the
        calling thread: handing it to the pool and waiting costs more than storing it, and
        callers with many small streams already run several of them at once."""
        sha = hashlib.sha256() if sha256 else None
        futures: list[Future[str]] = []
        size = 0
        for block in read_blocks(stream, chunk_size):
            if sha is not None:
                sha.update(block)
            if digest is not None:
                digest.update(block)
            size += len(block)
            if not futures and len(block) < chunk_size:
                progress.advance(len(block))
                return [self.store(block)], size, sha.hexdigest() if sha else ""
            futures.append(self.submit(block))
            progress.advance(len(block))
        return [f.result() for f in futures], size, sha.hexdigest() if sha else ""

    def store_content(
        self, content: bytes, chunk_size: int, progress: ProgressSink, *, sha256: bool = True
    ) -> tuple[list[str], int, str]:
        """``store_stream`` of bytes already in memory (a file read whole to describe it):
        content that fits in one block is stored as it is, without a stream around it."""
        if not 0 < len(content) < chunk_size:
            return self.store_stream(io.BytesIO(content), chunk_size, progress, sha256=sha256)
        progress.advance(len(content))
        sha = hashlib.sha256(content).hexdigest() if sha256 else ""
        return [self.store(content)], len(content), sha

    def finish(self) -> None:
        """Flushes open packs and writes the index entries of everything stored."""
        self.packer.flush()
        self.tree_packer.flush()
        self._write_pending_index()

    def abandon(self) -> None:
        """Writes the index entries of the packs already uploaded, dropping the open ones."""
        self.packer.abandon()
        self.tree_packer.abandon()
        self._write_pending_index()

    def _write_pending_index(self) -> None:
        with self._lock:
            batch, self._pending_index, self._pending_blobs = self._pending_index, [], 0
        if batch:
            self._write_index(batch)

    def close(self) -> None:
        """Stops the pack workers (after ``finish``, or to abandon an aborted run)."""
        self.pool.shutdown(wait=True)
        self.packer.close()
        self.tree_packer.close()


def packs_mapped(repo: RepoHandle) -> AbstractContextManager[None]:
    """Packs bound for a remote repository in mappings of their own (memory.py): an 8 MiB
    pack joined for its upload, carved from the arenas once glibc's threshold had risen past
    it, fragmented them (the 2 GB tree's first backup to S3: 199-216 MB peak and 13.5-14.4 s
    before, 187-195 MB and 13.2-13.7 s over three bench runs with this). Not for a local
    one: its work is CPU-bound, and a fresh mapping costs page faults."""
    if repo.storage.url.startswith("file://"):
        return nullcontext()
    return memory.large_buffers_mapped(PACK_BUFFERS_MAPPED)


class BackupSession:
    """One snapshot in the making. Use as a context manager; see docs/design/internals.md."""

    def __init__(
        self,
        repo: RepoHandle,
        *,
        asset: str,
        kind: str,
        labels: dict[str, str] | None = None,
        chunk_size: int | None = None,
        progress: ProgressSink = NO_PROGRESS,
        host: str | None = None,
        use_parent_cache: bool = True,
        parent_scope: str = "",
        file_sha256: bool = True,
        keyring: Keyring | None = None,
    ) -> None:
        self.repo = repo
        self.keyring = keyring  # None: the repository's (packs sealed to the recovery key)
        self.file_sha256 = file_sha256
        self.asset = asset
        self.kind = kind
        self.labels = dict(labels or {})
        self.chunk_size = chunk_size or repo.chunk_size
        self.progress = progress
        self.host = host or socket.gethostname()
        self.entries: list[Entry] = []
        self._identities: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._repo_lock = RepoLock(repo.storage, exclusive=False, operation=f"backup {asset}")
        self._writer: BlobWriter | None = None
        self._cache = repo.parent_cache(asset, parent_scope) if use_parent_cache else None
        self._parents_whole: ParentCache | None = None  # loaded on first lookup
        self._parents_loading = threading.Lock()
        # a streamed tree (stream_tree): the tree, the parent's files and this run's, in walk order
        self._stream: TreeStream | None = None
        self._parent_stream = ParentStream(None)
        self._parent_out = ParentStreamWriter(None)
        self._lock_chunks: IdTable | None = None  # chunks to keep locked (Object Lock only)
        self._committed: SnapshotInfo | None = None
        self.retention_requests = 0  # PutObjectRetention calls of the commit, for measurement
        # packs a sharded snapshot needs that this session did not write (the shards' data)
        self._retain_also: list[str] = []
        self._buffers = ExitStack()

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> BackupSession:
        self.repo.ensure_writable()
        self._repo_lock.acquire()
        try:
            self._buffers.enter_context(packs_mapped(self.repo))
            index = self.repo.load_index_for_writing()
            self._writer = BlobWriter(
                self.repo, KnownBlobs(index), workers=self.repo.workers, keyring=self.keyring
            )
        except BaseException:
            self._buffers.close()
            self._repo_lock.release()
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._parent_stream.close()
        self._parent_out.discard()  # nothing left after a commit; an aborted run's half
        try:
            if self._writer is not None:
                if exc_type is not None:
                    self._abort()
                self._writer.close()
        finally:
            self._buffers.close()
            self._repo_lock.release()

    def _abort(self) -> None:
        """Keep what was uploaded usable by indexing it; commit no snapshot."""
        assert self._writer is not None
        try:
            self._writer.abandon()
        except (LifeboatError, OSError):
            pass

    @property
    def writer(self) -> BlobWriter:
        """The session's blob writer, started on first use."""
        if self._writer is None:
            raise LifeboatError("backup session used outside its 'with' block")
        return self._writer

    @property
    def _parents(self) -> ParentCache:
        # once, whichever transfer thread asks first: without the lock each of a bucket
        # backup's 32 threads decoded a cache of its own (368 MB for 20,000 objects)
        with self._parents_loading:
            if self._parents_whole is None:
                self._parents_whole = ParentCache(self._cache)
            return self._parents_whole

    # -- adding content ---------------------------------------------------------------

    def stream_tree(self) -> None:
        """Write this snapshot's tree one directory at a time (tree format 2, repo/trees.py)
        instead of holding every entry until the commit. Entries then come through ``put``
        only, in walk order (each directory before its content, names sorted); the parent's
        files are looked up in that order too (``parent_encoded``), so neither the tree nor
        the parent is ever held whole."""
        if self.entries:
            raise LifeboatError("a streamed tree must start before any entry is added")
        self._stream = TreeStream(lambda raw: self.writer.store(raw, BLOB_TREE), self.chunk_size)
        self._parent_stream = ParentStream(self._cache)
        self._parent_out = ParentStreamWriter(self._cache)
        self._lock_chunks = IdTable() if lockable(self.repo.storage) is not None else None

    def parent_encoded(self, path: str, identity: str) -> bytes | None:
        """A streamed tree's parent entry for this file (asked in walk order) if unchanged,
        as the parent's tree stores it: for ``put_unchanged``, or ``decoded_entry`` for
        ``read_file``."""
        return self._parent_stream.lookup(path, identity)

    def put_unchanged(self, path: str, identity: str, encoded: bytes) -> bool | None:
        """Puts the parent's entry of an unchanged file (``parent_encoded``, the caller has
        just seen the file on disk) into the streamed tree as it is stored, if all its
        chunks are still stored, and returns whether it carries metadata (the parent's); None
        if the file must be read. Like ``put``: in walk order."""
        if self._stream is None:
            raise LifeboatError("put_unchanged needs a streamed tree (stream_tree)")
        # checked as a restore will decode it: an entry this version cannot read (a newer
        # version's cache, a damaged one) is read again, never put into the tree
        fields = decode_file_entry(encoded, path)
        if fields is None:
            return None
        chunks, size, meta = fields
        if not self._take_chunks(chunks, size):
            return None
        with self._lock:
            self.writer.stats.files += 1
        self._stream.add_encoded(path, encoded)
        line = self._parent_stream.matched_line(path, identity, encoded)
        if line is not None:
            self._parent_out.add_line(line)
        else:
            self._parent_out.add(path, identity, encoded)
        if self._lock_chunks is not None:
            for chunk in chunks:
                self._lock_chunks.add(chunk)
        return bool(meta)  # never None once put: a stored "meta": null is no metadata

    def put(self, entry: Entry, identity: str | None = None) -> None:
        """The next entry of a streamed tree, in walk order (not thread-safe: one caller)."""
        if self._stream is None:
            raise LifeboatError("put needs a streamed tree (stream_tree)")
        with self._lock:
            if entry.type == "file":
                self.writer.stats.files += 1
            elif entry.type == "dir":
                self.writer.stats.dirs += 1
        encoded = self._stream.add(entry)
        if identity is not None and entry.type == "file":
            self._parent_out.add(entry.path, identity, encoded)
        if self._lock_chunks is not None:
            for chunk in entry.chunks:
                self._lock_chunks.add(chunk)

    def read_file(
        self,
        path: str,
        source: str | Path,
        *,
        mode: int,
        mtime_ns: int,
        uid: int,
        gid: int,
        parent: Entry | None = None,
        describe: Callable[[bytes], dict[str, Any] | None] | None = None,
        opened: AheadFile | None = None,
        walked: tuple[int, int] | None = None,
    ) -> Entry:
        """The entry of the file at ``source``, its content stored (or the ``parent``'s entry
        when all its chunks are still stored); not added to the tree (see ``put``). Thread-safe.

        ``describe``: a file that is read (not taken from the parent) is read whole and its
        metadata is ``describe(content)``, derived from the very bytes stored (the keys
        kind's fingerprints; for small files, the caller decides which: one that has grown
        past DESCRIBED_MAX since is stored without).

        ``opened``: the file, already opened by the caller to be read ahead (closed here).

        ``walked``: the (device, inode) the walk saw. The file opened must be a regular
        file, and that one unless another was renamed over it where it stands (an editor's
        save, certbot, ``sed -i``): then it is read as it is now. O_NOFOLLOW guards only the
        last name: a directory above it swapped for a link, a pipe or a device put in its
        place, is left out instead (SourceChanged). The parent cache keeps the walk's
        identity for a file renamed over: its inode, with the ctime a rename changes, never
        matches a later walk, so the next backup reads the file again."""
        try:
            if parent is not None:
                os.stat(source)  # a file gone since the walk is reported, not taken from the parent
                if (reused := self.take_parent(path, parent)) is not None:
                    return reused
            fh: IO[bytes] = opened or _open_regular(source)  # type: ignore[assignment]
            with fh:
                if walked is not None:
                    st = os.fstat(fh.fileno())
                    if not stat.S_ISREG(st.st_mode) or (
                        (st.st_dev, st.st_ino) != walked and not _replaced_in_place(fh, source)
                    ):
                        raise SourceChanged(f"{source} was replaced during the backup")
                    if (st.st_dev, st.st_ino) != walked:  # renamed over (an editor's save): as it is now
                        mode, mtime_ns, uid, gid = st.st_mode & 0o7777, st.st_mtime_ns, st.st_uid, st.st_gid
                if describe is None:
                    return self._stream_entry(path, fh, mode, mtime_ns, uid, gid, None)
                content = _read_at_most(fh, DESCRIBED_MAX + 1)
                if len(content) > DESCRIBED_MAX:
                    fh.seek(0)  # grown past what may be held in memory since the walk: not described
                    return self._stream_entry(path, fh, mode, mtime_ns, uid, gid, None)
            meta = describe(content)
            stored = self.writer.store_content(
                content, self.chunk_size, self.progress, sha256=self.file_sha256
            )
            return _file_entry(path, stored, mode, mtime_ns, uid, gid, meta)
        except PermissionError:
            raise StorageError(f"permission denied reading {source}") from None
        except OSError as exc:
            if _source_changed(exc, source):
                raise SourceChanged(f"{source} was deleted or replaced during the backup") from None
            raise

    def read_stream(
        self, path: str, stream: IO[bytes], *, mtime_ns: int, meta: dict[str, Any], mode: int = 0o644
    ) -> Entry:
        """The entry of content read from ``stream`` (an object's body), its content stored;
        not added to the tree (see ``put``). Thread-safe."""
        return self._stream_entry(path, stream, mode, mtime_ns, None, None, meta)

    def take_parent(self, path: str, parent: Entry, meta: dict[str, Any] | None = None) -> Entry | None:
        """The parent's entry of an unchanged file (the caller has just seen it on disk) as
        this run's, if all its chunks are still stored; None if the file must be read."""
        if not self._take(parent):
            return None
        parent.path = path
        if meta is not None:
            parent.meta = dict(meta)
        return parent

    def _take(self, cached: Entry) -> bool:
        """Counts a parent's file as this run's if all its chunks are still stored."""
        return self._take_chunks(cached.chunks, cached.size)

    def _take_chunks(self, chunks: list[str], size: int) -> bool:
        writer = self.writer  # once: a property, and an unchanged backup asks once per file
        with writer._lock:
            if not writer.known.holds_all(chunks):
                return False
            stats = writer.stats
            stats.chunks += len(chunks)
            stats.bytes += size
            stats.reused_files += 1
        self.progress.advance(size)
        return True

    def _stream_entry(
        self,
        path: str,
        stream: IO[bytes],
        mode: int,
        mtime_ns: int,
        uid: int | None,
        gid: int | None,
        meta: dict[str, Any] | None,
    ) -> Entry:
        stored = self.writer.store_stream(stream, self.chunk_size, self.progress, sha256=self.file_sha256)
        return _file_entry(path, stored, mode, mtime_ns, uid, gid, meta)

    def _record(self, entry: Entry, identity: str | None) -> Entry:
        if self._stream is not None:
            raise LifeboatError("a streamed tree takes entries through put only")
        with self._lock:
            self.entries.append(entry)
            if identity is not None:
                self._identities[identity] = entry  # serialised once, at commit
            if entry.type == "file":
                self.writer.stats.files += 1
            elif entry.type == "dir":
                self.writer.stats.dirs += 1
        return entry

    def reuse(self, path: str, identity: str) -> Entry | None:
        """Take the parent's entry for ``identity`` if all its chunks are still stored."""
        cached = self._parents.lookup(identity)
        if cached is None or cached.type != "file" or not self._take(cached):
            return None
        cached.path = path
        return self._record(cached, identity)

    def add_stream(
        self,
        path: str,
        stream: IO[bytes],
        *,
        mode: int = 0o644,
        mtime_ns: int = 0,
        uid: int | None = None,
        gid: int | None = None,
        meta: dict[str, Any] | None = None,
        identity: str | None = None,
    ) -> Entry:
        """Stores a file's content read from ``stream`` under ``path``."""
        if identity is not None:
            reused = self.reuse(path, identity)
            if reused is not None:
                return reused
        entry = self._stream_entry(path, stream, mode, mtime_ns, uid, gid, meta)
        return self._record(entry, identity)

    def add_file(
        self,
        path: str,
        source: Path,
        *,
        mode: int | None = None,
        mtime_ns: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        meta: dict[str, Any] | None = None,
        identity: str | None = None,
    ) -> Entry:
        """Stores the file at ``source`` under ``path`` (reused from the parent when its identity matches)."""
        try:
            if identity is not None:
                os.stat(source)  # a file gone since the walk is reported, not taken from the parent
                reused = self.reuse(path, identity)
                if reused is not None:
                    if meta is not None:
                        reused.meta = dict(meta)
                    return reused
            with open(source, "rb", buffering=0) as fh:
                # The caller's walk usually has the metadata already: one stat per file, not two.
                if mode is None or mtime_ns is None or uid is None or gid is None:
                    st = os.fstat(fh.fileno())
                    mode = mode if mode is not None else st.st_mode & 0o7777
                    mtime_ns = mtime_ns if mtime_ns is not None else st.st_mtime_ns
                    uid = uid if uid is not None else st.st_uid
                    gid = gid if gid is not None else st.st_gid
                return self.add_stream(
                    path, fh, mode=mode, mtime_ns=mtime_ns, uid=uid, gid=gid, meta=meta, identity=identity
                )
        except FileNotFoundError:
            raise NotFoundError(f"{source} disappeared during the backup") from None
        except PermissionError:
            raise StorageError(f"permission denied reading {source}") from None

    def add_bytes(
        self,
        path: str,
        data: bytes,
        *,
        mode: int = 0o644,
        mtime_ns: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> Entry:
        """Stores ``data`` as the file ``path``."""
        import io

        return self.add_stream(path, io.BytesIO(data), mode=mode, mtime_ns=mtime_ns, meta=meta)

    def add_entry(self, entry: Entry, identity: str | None = None) -> Entry:
        """Adds an entry without content (a directory, link or a reused file), or one whose
        content ``read_stream`` stored, under the ``identity`` the next backup finds it by
        (recorded only once the caller found the read complete: a retried read is not
        recorded twice)."""
        return self._record(entry, identity)

    def set_labels(self, labels: dict[str, str]) -> None:
        """Adds plaintext, non-secret labels to the snapshot."""
        self.labels.update({str(k): str(v) for k, v in labels.items()})

    # -- commit -------------------------------------------------------------------------

    def _store_tree(self) -> tuple[list[str], dict[int, bytes]]:
        """Store the tree, the document ``{"entries": [...]}`` cut into blobs of
        ``chunk_size``; returns its blob ids and each entry's encoded JSON (by
        ``id(entry)``, for the parent cache). Each entry is encoded once and the document
        is cut as it is joined: the whole document, a dict per entry and the parent
        cache's lines were held at once at the commit of a bucket backup, its peak of
        memory (20,000 objects: ~30 MB on top of the entries). Held in orjson's own
        buffers, the encoded entries would cost 4 KiB each (``encoded_entry``)."""
        entries = sorted(self.entries, key=lambda e: e.path)
        encoded = [encoded_entry(e) for e in entries]
        ids = [self.writer.store(piece, BLOB_TREE) for piece in document_pieces(encoded, self.chunk_size)]
        return ids, {id(e): j for e, j in zip(entries, encoded, strict=True)}

    def _extend_retention(self, tree: list[str]) -> None:
        """Under Object Lock, everything the snapshot needs stays locked at least as long
        as the snapshot itself (repo/immutability.py); before the commit point, so a
        committed snapshot is always covered."""
        writer = self.writer
        blobs = {c for e in self.entries for c in e.chunks}
        blobs.update(tree)
        if self._stream is not None:
            blobs.update(self._stream.blobs)
            blobs.update(self._lock_chunks or ())
        new = [pack_name(p) for p in writer.packs_written] + [index_name(i) for i in writer.index_files]
        needed = objects_of(self.repo.index(), blobs, new, pack_ids=self._retain_also)
        self.retention_requests = ensure_retention(self.repo, needed)

    def finish_fragment(self) -> tuple[list[str], SnapshotStats, list[str]]:
        """End a shard of a sharded backup without committing a snapshot: store its part
        of the tree (the entries, comma-separated, without the enclosing document) and
        return the part's blob ids, the shard's stats and the ids of the packs its data
        lies in (reused or new: the commit extends their Object Lock retention, since it
        cannot read the parts). ``commit_fragments`` later joins the parts of every shard
        into one ordinary tree."""
        writer = self.writer
        writer.finish()
        entries = sorted(self.entries, key=lambda e: e.path)
        encoded = (encoded_entry(e) for e in entries)  # one at a time, cut as they come
        pieces = document_pieces(encoded, self.chunk_size, head=b"", tail=b"")
        ids = [writer.store(piece, BLOB_TREE) for piece in pieces]
        writer.finish()
        writer.stats.seconds = round(time.monotonic() - self._started, 3)
        index = self.repo.index(refresh=True)
        chunks = {c for e in entries for c in e.chunks}
        packs = {loc.pack for c in chunks if (loc := index.get(c)) is not None}
        return ids, writer.stats, sorted(packs.union(writer.packs_written))

    def commit_fragments(
        self, fragments: list[list[str]], stats: list[SnapshotStats], packs: Iterable[str] = ()
    ) -> SnapshotInfo:
        """Commit one snapshot whose tree is the shards' parts joined into the document
        ``{"entries": [...]}``: the tree blobs are concatenated as stored, so this needs
        no key that can decrypt them, and readers see an ordinary snapshot tree."""
        writer = self.writer
        tree = [writer.store(b'{"entries":[', BLOB_TREE)]
        comma = writer.store(b",", BLOB_TREE)
        for part in (f for f in fragments if f):
            tree += ([comma] if len(tree) > 1 else []) + part
        tree.append(writer.store(b"]}", BLOB_TREE))
        writer.finish()
        total = SnapshotStats()
        for part_stats in stats:
            for name, value in asdict(part_stats).items():
                setattr(total, name, getattr(total, name) + value)
        total.seconds = round(time.monotonic() - self._started + sum(s.seconds for s in stats), 3)
        self._retain_also = sorted(set(packs))
        return self._commit_header(tree, total)

    def commit(self) -> SnapshotInfo:
        """Makes the snapshot visible (the commit point); nothing is before this."""
        if self._stream is not None:
            return self._commit_stream(self._stream)
        writer = self.writer
        writer.finish()  # data packs and their index first
        if self._parents_whole is not None:  # no more lookups: free them before the tree is built
            self._parents_whole.entries = {}
        tree, encoded = self._store_tree()
        writer.finish()  # then the tree's pack and index
        writer.stats.seconds = round(time.monotonic() - self._started, 3)
        info = self._commit_header(tree, writer.stats)
        self._parents.save_encoded((identity, encoded[id(e)]) for identity, e in self._identities.items())
        return info

    def _commit_stream(self, stream: TreeStream) -> SnapshotInfo:
        writer = self.writer
        self._parent_stream.close()
        writer.finish()  # data packs and their index first
        root = stream.finish()  # the directories still open, then the top level
        writer.finish()  # then the last trees' pack and index
        writer.stats.seconds = round(time.monotonic() - self._started, 3)
        info = self._commit_header(root, writer.stats, TREE_FORMAT_PER_DIRECTORY)
        self._parent_out.commit()
        return info

    def _commit_header(
        self, tree: list[str], stats: SnapshotStats, tree_format: int = TREE_FORMAT_SINGLE
    ) -> SnapshotInfo:
        rejected = self._parent_stream.rejected + (self._parents_whole.rejected if self._parents_whole else 0)
        if rejected:  # kept in the snapshot, said by the backup: the state dir was rewritten
            self.labels[PARENT_CACHE_REJECTED] = str(rejected)
        info = SnapshotInfo(
            id="",
            asset=self.asset,
            kind=self.kind,
            time=clock.now(),
            host=self.host,
            labels=self.labels,
            stats=stats,
            tree=tree,
            key_id=self.repo.key_id,
            parent=self.repo.latest_snapshot_id(self.asset),
            tree_format=tree_format,
        )
        self._extend_retention(tree)
        snapshot_id, signed = encode_snapshot(info, self.repo.metadata)  # sealed, signed
        info.id = snapshot_id
        self._repo_lock.ensure_held()  # a prune may have judged it stale and taken our chunks
        self.repo.storage.put(snapshot_name(snapshot_id), signed)  # the commit point
        self._committed = info
        self._consolidate_index()
        return info

    def _consolidate_index(self) -> None:
        """Past the threshold, merge small index files (repo/consolidate.py), still under
        this session's lock. Counted from the small files of the index loaded at the start
        plus what this session wrote, so a backup under the threshold costs no listing."""
        blobs = {**self.repo.index().file_blobs}
        blobs.update((index_name(i), n) for i, n in self.writer.index_files.items())
        limit = index_files_max()
        if limit and len(small_index_files(blobs, blobs)) > limit:
            consolidate_quietly(self.repo, blobs)
