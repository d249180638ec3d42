"""Reads the compiled modules a command imports into the page cache ahead of their import.

A command started on a cold page cache (an hourly backup on a busy database host; the
benchmarks drop the cache before each phase) reads its ~370 compiled modules one after
another, a small random read each, and waits for every one: 0.15-0.2 s of a 1.0 s
unchanged backup of 30,000 key files. So each verb lists, at its exit, the modules it
imported (`$XDG_CACHE_HOME/lifeboat/imports/<verb>`, else `~/.cache/...`; `backup.<asset>`
for a named asset: see ``list_name``), and its next
run starts threads that ask the kernel to read those files ahead (``posix_fadvise``
WILLNEED) while the interpreter imports them in turn. Nothing listed is parsed or run.

The list is kept only under a cache directory that this user owns and no one else may
write, reached without following a link from there down (root makes none that is
missing): root run with another user's home (``sudo -E``) neither reads that user's list
nor writes where a link of theirs points. A list holds only paths of modules the run that
wrote it imported. A cache directory that cannot be used costs nothing but the gain.

Left out: the fast commands of `cli/entry.py` (`wal push`, `status`...), which run every
few seconds on a warm cache, where the threads made them 5-10 ms slower; and the verbs
that fork while they run (`status`'s probe child, `wal`'s drainer), which must not fork
beside threads.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Iterable
from contextlib import suppress

READERS = 4  # threads, so that the disk has several reads in flight
MAX_PATHS = 2000  # what a list holds at most (a command imports ~100 to ~500 modules)
FORKING_VERBS = frozenset({"status", "wal"})
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def cache_base() -> str | None:
    """``$XDG_CACHE_HOME``, or ``~/.cache`` (an XDG_CACHE_HOME that is not absolute is
    ignored, as the XDG spec says), without a trailing slash (which would have the last
    directory's link followed); None without either."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return os.path.normpath(xdg)
    home = os.environ.get("HOME", "")
    return os.path.normpath(os.path.join(home, ".cache")) if os.path.isabs(home) else None


def _private(fd: int) -> bool:
    """Whether a directory is this user's and no one else may write in it (one writable by
    its group, as a umask of 002 leaves it, is not used: the read-ahead is then off)."""
    info = os.fstat(fd)
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def open_cache_dir(base: str) -> int | None:
    """A descriptor of ``base/lifeboat/imports``, made if missing, each directory from
    ``base`` down opened without following a link and each one private (None otherwise).
    A missing ``base`` is made only by a user other than root, in a directory they own
    (their home): root makes none where the environment says (``sudo -E``)."""
    if os.geteuid() != 0:
        with suppress(OSError):
            if os.stat(os.path.dirname(base)).st_uid == os.geteuid():
                os.mkdir(base, 0o700)
    fd = _open_private(base)
    for part in ("lifeboat", "imports"):
        if fd is None:
            return None
        fd = _open_private(part, fd)
    return fd


def _open_private(name: str, parent: int | None = None) -> int | None:
    """``name`` (below ``parent``, made there if missing; ``parent`` is closed) opened as a
    directory without following a link, when it is private."""
    try:
        if parent is not None:
            with suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError:
        return None
    finally:
        if parent is not None:
            os.close(parent)
    if _private(fd):
        return fd
    os.close(fd)
    return None


def listed(dir_fd: int, name: str) -> list[str]:
    """The module files the list ``name`` names (none when it cannot be read)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return []
    try:
        with open(fd, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read(MAX_PATHS * 512).split("\n")[:MAX_PATHS]
    except (OSError, ValueError):
        return []
    return [line for line in lines if _is_module_file(line)]


def _is_module_file(path: str) -> bool:
    return path.startswith("/") and path.endswith(".pyc")


def read_ahead(paths: list[str]) -> list[threading.Thread]:
    """Asks the kernel to read ``paths`` into the page cache, in ``READERS`` daemon threads
    (opening a file on a cold cache waits for its directory and inode: each thread waits
    for its own)."""
    threads = [
        threading.Thread(target=advise, args=(paths[k::READERS],), name="import-ahead", daemon=True)
        for k in range(min(READERS, len(paths)))
    ]
    for thread in threads:
        thread.start()
    return threads


def advise(paths: Iterable[str]) -> None:
    """Read-ahead for each file; one that cannot be opened without waiting (a pipe) or at
    all is passed over."""
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
        if isinstance(cached, str) and _is_module_file(cached) and "\n" not in cached:
            found.add(cached)
    return found


def remember(dir_fd: int, name: str, known: list[str]) -> None:
    """Writes the list ``name`` anew when this process imported other modules than it
    names: this run's, not their union with earlier runs' (restores of every kind of asset
    had the list of `restore` name 1,045 modules, 20 MB read ahead for a keys restore that
    needs 345, 7.5 MB). Written whole under a new name first, so that a reader never sees
    half of it."""
    now = imported()
    if now == set(known):
        return
    lines = "".join(path + "\n" for path in sorted(now)[:MAX_PATHS])
    temp = f".{name}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, 0o600, dir_fd=dir_fd)
        with open(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(lines)
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except (OSError, ValueError):
        try:
            os.unlink(temp, dir_fd=dir_fd)
        except OSError:
            pass


def list_name(verb: str, word: str | None) -> str | None:
    """The file the list of ``verb`` (and the word after it: ``verbs.BY_NEXT_WORD``) is
    kept in: ``backup.db`` beside ``backup.keys``, each run of one asset reading ahead
    what its kind imports, not what the other asset's run did. None for a verb that is not
    a plain name; a word that is not one (a path, an option's value) is left out."""
    if not _plain(verb):
        return None
    return f"{verb}.{word}" if word is not None and _plain(word) else verb


def _plain(word: str) -> bool:
    return 0 < len(word) <= 64 and word.isascii() and word.replace("-", "").replace("_", "").isalnum()


def start(verb: str, word: str | None = None) -> None:
    """Starts reading ahead what ``verb`` (with ``word``: ``list_name``) imported in its
    earlier runs, and has this process write that list again at its exit (not a child
    forked from it). An interpreter that has imported typer already (a call from Python,
    the suite's fork server) has nothing left to read and would list modules the verb
    never needed: it does neither."""
    name = list_name(verb, word)
    if name is None or verb in FORKING_VERBS or "typer" in sys.modules:
        return
    base = cache_base()
    dir_fd = open_cache_dir(base) if base else None
    if dir_fd is None:
        return
    known = listed(dir_fd, name)
    if known:
        read_ahead(known)
    import atexit

    parent = os.getpid()

    def at_exit() -> None:
        if os.getpid() == parent:
            try:
                remember(dir_fd, name, known)
            finally:
                os.close(dir_fd)

    atexit.register(at_exit)
