"""Asking the kernel to read ahead of a walk over a cold tree (small files' content and
every inode), so that it does not wait on the disk once per file (the files and keys
kinds and a dir:// objects source)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


def will_need(path: str) -> None:
    """Ask the kernel to read ``path`` into the page cache; a file that cannot be opened is
    left to its read, which reports it. Links are not followed (a walk lists them as links)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


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
