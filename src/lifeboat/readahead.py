"""Asking the kernel to read a small file ahead of its read, so that a walk over a cold
tree does not wait on the disk once per file (the files kind and a dir:// objects source)."""

from __future__ import annotations

import os


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
