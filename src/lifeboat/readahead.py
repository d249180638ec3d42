"""Asking the kernel to read ahead of a walk over a cold tree (small files' content and
every inode), so that it does not wait on the disk once per file (the files and keys
kinds and a dir:// objects source); a small file opened to be read ahead is read through
the same descriptor."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

AHEAD_SHARE = 32  # a batch holds at most this fraction of the open-files limit open ahead


def open_batch_ahead(files: Iterable[tuple[str, int] | None]) -> list[AheadFile | None]:
    """``open_ahead`` of each (path, size) of a batch, in its order (None where the caller
    wants none, or could not open it), while the batch holds no more than a 32nd of the
    open-files limit: five readers a backup, and a daemon running several backups, must
    leave descriptors for packs, sockets and large files (at the usual 1,024, 32 a batch).
    The rest of the batch is read the usual way."""
    allowance = _open_files_limit() // AHEAD_SHARE
    opened: list[AheadFile | None] = []
    try:
        for file in files:
            ahead = open_ahead(*file) if file is not None and allowance > 0 else None
            allowance -= ahead is not None
            opened.append(ahead)
    except BaseException:  # Ctrl-C, SIGTERM or a deadline on the walk's thread: none left open
        close_all(opened)
        raise
    return opened


def close_all(opened: Iterable[AheadFile | None]) -> None:
    """Closes a batch's files opened ahead (those already read are closed: no matter)."""
    for ahead in opened:
        if ahead is not None:
            ahead.close()


def _open_files_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def open_ahead(path: str, size: int) -> AheadFile | None:
    """``path`` opened for reading, the kernel asked to read it into the page cache while
    the files before it are stored. None if it cannot be opened: its own read reports why.
    Links are not followed (a walk lists them as links; a link swapped in since is read the
    usual way). ``size`` is what the walk saw: reads are sized by it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    return AheadFile(fd, size)


class AheadFile:
    """A file opened by ``open_ahead``, read later with plain ``os.read``: opening it again,
    or a FileIO over it (which fstats on creation), would cost a system call more per small
    file, and every system call hands the interpreter to another thread of the walk.

    A read asks for at most one byte more than the walk saw left, so that the end (or a
    file grown since) is seen without allocating the 1 MiB a caller asks for; once past the
    walk's size, reads are as asked. Closing is idempotent: the reader closes it, and so
    does whoever opened it should the read not happen."""

    __slots__ = ("_left", "_open", "fd", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size  # as the walk saw it
        self._left = size
        self._open = True

    @property
    def closed(self) -> bool:
        """Whether it has been closed (a retry then opens the file again)."""
        return not self._open

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is left if ``n`` is negative)."""
        if n < 0:
            parts = []
            while block := self.read(1 << 20):
                parts.append(block)
            return b"".join(parts)
        if self._left >= 0:
            n = min(n, self._left + 1)
        data = os.read(self.fd, n)
        self._left -= len(data)
        return data

    def seek(self, offset: int) -> int:
        """Moves to ``offset`` from the start; reads are then as asked."""
        self._left = -1
        return os.lseek(self.fd, offset, os.SEEK_SET)

    def fileno(self) -> int:
        """The descriptor."""
        return self.fd

    def close(self) -> None:
        """Closes the descriptor, once."""
        if self._open:
            self._open = False
            os.close(self.fd)

    def __enter__(self) -> AheadFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


DU_WAIT = 10.0  # seconds a killed du may take to go


@contextmanager
def metadata_read_ahead(roots: Sequence[str | os.PathLike[str]]) -> Iterator[None]:
    """Has the kernel read the inodes under ``roots`` while the block runs, by a `du` beside
    the walk. A walk of a cold tree otherwise waits on the disk for each file's inode: 0.55 s
    of a 2.8 s unchanged backup of 100,000 small files. The walk cannot overlap those waits
    itself: a thread of this process that stats files gets the GIL back only every switch
    interval while the walk's thread is busy. `du` is in C on the other core and runs ahead
    of the walk; it only reads metadata, its output is discarded and it is stopped when the
    block ends. Without `du` (or if it cannot start) the walk reads the inodes itself."""
    # here, not at the top: a `wal push` stores through the backup code that imports this
    # module, and subprocess and shutil (with bz2, lzma and locale) cost it 4 ms to import
    import shutil
    import subprocess

    du = shutil.which("du")
    child: subprocess.Popen[bytes] | None = None
    if du is not None and roots:
        try:
            child = subprocess.Popen(
                # -x: not into other filesystems, where a hung mount could hold it past a kill
                [du, "-s", "-x", "--", *(os.fspath(root) for root in roots)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            child = None
    try:
        yield
    finally:
        if child is not None:
            child.kill()
            try:
                child.wait(timeout=DU_WAIT)
            except subprocess.TimeoutExpired:
                pass  # stuck in the kernel (a hung mount): killed, reaped once it returns
