"""Reads the compiled modules a command imports into the page cache ahead of their import.

A command started on a cold page cache (an hourly backup on a busy database host; the
benchmarks drop the cache before each phase) reads its ~370 compiled modules one after
another, a small random read each, and waits for every one: 0.15-0.2 s of a 1.0 s
unchanged backup of 30,000 key files. So each verb lists, at its exit, the modules it
imported (`$XDG_CACHE_HOME/lifeboat/imports/<verb>`, else `~/.cache/...`), and its next
run starts threads that ask the kernel to read those files ahead (``posix_fadvise``
WILLNEED) while the interpreter imports them in turn. Only ``.pyc`` files named by an
absolute path are read ahead, and none is parsed or run: a list somebody rewrote can make
lifeboat read ahead files it may read anyway, nothing more. A cache directory that cannot
be read or written costs nothing but the gain. The fast commands of `cli/entry.py` (`wal
push`, `status`...) read nothing ahead: they run every few seconds on a warm cache, where
the threads made them 5-10 ms slower.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

READERS = 4  # threads, so that the disk has several reads in flight
MAX_PATHS = 2000  # what a list holds at most (a command imports ~100 to ~500 modules)
_COMMAND = re.compile(r"[a-z][a-z-]{0,31}")


def cache_file(command: str) -> Path | None:
    """Where ``command``'s list is kept (None without a home or for an odd command name)."""
    if not _COMMAND.fullmatch(command):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or (
        os.path.join(os.environ["HOME"], ".cache") if os.environ.get("HOME") else ""
    )
    if not os.path.isabs(base):
        return None
    return Path(base) / "lifeboat" / "imports" / command


def listed(path: Path) -> list[str]:
    """The module files a list names (none when it cannot be read)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read(MAX_PATHS * 512).splitlines()[:MAX_PATHS]
    except OSError:
        return []
    return [line for line in lines if line.startswith("/") and line.endswith(".pyc")]


def read_ahead(paths: list[str]) -> None:
    """Asks the kernel to read ``paths`` into the page cache, in ``READERS`` daemon threads
    (opening a file on a cold cache waits for its directory and inode: each thread waits
    for its own)."""
    for k in range(min(READERS, len(paths))):
        threading.Thread(target=_advise, args=(paths[k::READERS],), name="import-ahead", daemon=True).start()


def _advise(paths: Iterable[str]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def imported() -> set[str]:
    """The compiled files of the modules this process imported."""
    found = set()
    for module in list(sys.modules.values()):
        cached = getattr(getattr(module, "__spec__", None), "cached", None)
        if isinstance(cached, str) and cached.startswith("/") and cached.endswith(".pyc"):
            found.add(cached)
    return found


def remember(path: Path, known: list[str]) -> None:
    """Adds what this process imported to the list at ``path``, when it imported something
    the list lacks; written whole under a new name first, so a reader never sees half."""
    new = imported() - set(known)
    if not new:
        return
    lines = "".join(p + "\n" for p in [*known, *sorted(new)][:MAX_PATHS])
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            f.write(lines)
        os.replace(temp, path)
    except OSError:
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            pass


def start(command: str | None) -> None:
    """Starts reading ahead what ``command`` imported in its earlier runs, and has this
    process add to that list at its exit (not a child forked from it). An interpreter that
    has imported typer already (a call from Python, the suite's fork server) has nothing
    left to read and would list modules the command never needed: it does neither."""
    path = cache_file(command) if command else None
    if path is None or "typer" in sys.modules:
        return
    known = listed(path)
    if known:
        read_ahead(known)
    import atexit

    parent = os.getpid()

    def at_exit() -> None:
        if os.getpid() == parent:
            remember(path, known)

    atexit.register(at_exit)
