"""Object restores into a dir:// target: keys a filesystem cannot hold are found before
anything is written, and every file is created relative to its parent's descriptor, so a
link already in the target is replaced, never followed (see lifeboat.targetdir)."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from lifeboat.assets.objects.keypaths import key_to_relpath
from lifeboat.errors import RestoreError
from lifeboat.targetdir import (
    DISK_FULL,
    NAME_MAX,
    TargetDir,
    free_space,
    readable_size,
    refuse_short_space,
    rounded,
    split_parent,
    write_all,
)

NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
SHOWN = 5  # unmappable keys named in an error; --dry-run lists them all

if TYPE_CHECKING:
    from lifeboat.assets.objects.source import DirSource


class DiskFull(Exception):
    """The target's filesystem is full: the whole restore stops (never retried)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def short_key(key: str, limit: int = 60) -> str:
    """A key shortened for an error line."""
    return key if len(key) <= limit else f"{key[: limit - 20]}…{key[-12:]} ({len(key)} chars)"


class UnmappableKeys:
    """Finds the keys that no directory can hold, fed one key at a time, each with the
    reason: a path segment longer than a file name can be, or a key that is also a
    "directory" of another key. Keys walked from a directory cannot be both (one name in a
    directory is a file or a directory, never both): ``from_directory`` checks only their
    segments, holding no key."""

    def __init__(self, *, from_directory: bool = False) -> None:
        self.from_directory = from_directory
        self._problems: list[str] = []
        self._files: set[str] = set()
        self._keys: list[tuple[str, str]] = []

    def add(self, key: str) -> None:
        """One more key of the restore."""
        rel = key_to_relpath(key)
        # no segment is longer than the whole path: most keys need no look at each
        if len(os.fsencode(rel)) > NAME_MAX and any(
            len(os.fsencode(seg)) > NAME_MAX for seg in rel.split("/")
        ):
            self._problems.append(f"{short_key(key)}: a path segment is longer than {NAME_MAX} bytes")
        elif not self.from_directory:
            self._files.add(rel)
            self._keys.append((key, rel))

    def found(self) -> list[str]:
        """Every problem among the keys added so far."""
        problems = list(self._problems)
        for key, rel in self._keys:
            segments = rel.split("/")
            for depth in range(1, len(segments)):
                prefix = "/".join(segments[:depth])
                if prefix in self._files:
                    problems.append(f"{short_key(key)}: {short_key(prefix)} is also an object")
                    break
        return problems


def unmappable_keys(keys: Iterable[str], *, from_directory: bool = False) -> list[str]:
    """The problems of ``keys`` as UnmappableKeys finds them."""
    check = UnmappableKeys(from_directory=from_directory)
    for key in keys:
        check.add(key)
    return check.found()


def refuse_unmappable(problems: list[str], target: str) -> None:
    """Refuse keys that cannot become paths in a directory target, before anything is written."""
    if not problems:
        return
    more = f" and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    raise RestoreError(
        f"{len(problems)} keys cannot be files under {target}: " + "; ".join(problems[:SHOWN]) + more,
        hint="restore them into an s3:// target (or list them all with --dry-run)",
    )


def open_dir_target(target: DirSource) -> None:
    """Create the target directory; an OS error here is permanent, reported in one line."""
    try:
        target.ensure_exists()
    except OSError as exc:
        raise RestoreError(f"cannot create target {target.url}: {exc.strerror or exc}") from None


class SpaceNeeded:
    """What a restore into a directory will take on its filesystem, object by object: each
    file's blocks, less those of the file it replaces (whose space comes back)."""

    def __init__(self, target: DirSource) -> None:
        self.target = target
        self.free, self.block = free_space(target.root)
        self.needed = 0

    def add(self, size: int, replaced: int | None) -> None:
        """One object of ``size`` bytes, replacing a file of ``replaced`` bytes (or none)."""
        self.needed += rounded(size, self.block) - (rounded(replaced, self.block) if replaced else 0)

    def refuse_short(self) -> None:
        """Refuse up front when the filesystem obviously cannot hold the objects."""
        refuse_short_space(self.target.url, self.needed, self.free)


class DirWriter:
    """Writes objects as files under a dir:// target. A new name is written in place
    (O_EXCL, removed if the write fails); only an existing one is replaced through a temp
    name: renames into one directory serialise on its lock, and with a temp file per object
    a many-small-objects restore spent a quarter of its time in the kernel's rename."""

    def __init__(self, target: DirSource, fresh: bool) -> None:
        self.tree = TargetDir(target.root, fresh=fresh)
        self._written = 0  # bytes, for the full-disk message
        self._lock = threading.Lock()

    def write(self, key: str, chunks: Iterable[bytes]) -> int:
        """Write the object; returns its size. OS errors are permanent here (never retried):
        a full disk raises DiskFull, anything else a one-line RestoreError."""
        rel = key_to_relpath(key)
        parent, name = split_parent(rel)
        try:
            dir_fd = self.tree.acquire(parent)
        except OSError as exc:
            raise self._failure(key, exc) from None
        try:
            return self._write(dir_fd, rel, name, chunks)
        except OSError as exc:
            raise self._failure(key, exc) from None
        finally:
            self.tree.release(parent)

    def make_parent(self, parent: str) -> None:
        """Makes the directory ``parent`` (relative to the target) and those above it,
        for files made by the writer process; DiskFull or a one-line RestoreError."""
        try:
            self.tree.acquire(parent)
        except OSError as exc:
            raise self._failure(parent, exc) from None
        self.tree.release(parent)

    def _write(self, dir_fd: int, rel: str, name: str, chunks: Iterable[bytes]) -> int:
        try:
            fd, path, replace = os.open(name, NEW_FLAGS, 0o644, dir_fd=dir_fd), name, False
        except FileExistsError:  # a file, link or directory holds the name: replaced below
            (path, fd), replace = self.tree.open_temp(dir_fd, name, ".lifeboat"), True
        size = 0
        try:
            for chunk in chunks:
                size += len(chunk)
                write_all(fd, chunk)
        except BaseException:
            os.close(fd)
            os.unlink(path, dir_fd=dir_fd)
            raise
        os.close(fd)
        if replace:
            self.tree.install(dir_fd, path, name, rel)
        else:
            self.tree.record(rel, False)
        with self._lock:
            self._written += size
        return size

    def delete(self, key: str) -> None:
        """Remove the object's file (an in-place restore of a dir:// source), through
        directory descriptors like every write."""
        parent, name = split_parent(key_to_relpath(key))
        try:
            dir_fd = self.tree.acquire(parent, create=False)
        except OSError as exc:
            if exc.errno in GONE:
                return  # no such directory (a link is not one): nothing of the key to delete
            raise self._failure(key, exc) from None
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in GONE:
                raise self._failure(key, exc) from None
        finally:
            self.tree.release(parent)

    def _failure(self, key: str, exc: OSError) -> Exception:
        if exc.errno in DISK_FULL:
            return DiskFull(exc)
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ENAMETOOLONG:
            reason = "name too long for this filesystem"
        return RestoreError(f"cannot write {short_key(key)}: {reason}")

    def take_back(self, target: str) -> RestoreError:
        """Remove what this restore wrote and return the error to raise."""
        removed = self.tree.take_back()
        return RestoreError(
            f"no space left on the filesystem of {target} after {readable_size(self._written)}; "
            f"removed the {removed} files and directories this restore had created",
            hint="free space or restore elsewhere, then run the restore again",
        )

    def close(self) -> None:
        """Release the target directory's descriptors."""
        self.tree.close()
