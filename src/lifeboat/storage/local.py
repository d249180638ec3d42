"""Local filesystem storage: files written once, atomically, then made read-only."""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lifeboat.errors import AlreadyExistsError, LockedError, NotFoundError, StorageError
from lifeboat.storage.base import ObjectStat

TMP_MARK = ".lifeboat-tmp-"
# Directories are shared by every writer of the repository (root running backups,
# PostgreSQL's user running archive_command): the owner and the group may write, and the
# setgid bit hands the repository's group down to every directory below it.
DIR_MODE = 0o2770
# Objects this large (packs) leave the page cache once they are durable (``_drop_cached``).
DROP_CACHED_FROM = 1 << 20


def _load_renameat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.renameat2
    except (OSError, AttributeError):
        return None


_RENAMEAT2 = _load_renameat2()
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _rename_noreplace(src: Path, dst: Path) -> None:
    """rename(2) that fails (EEXIST) rather than replace an empty directory another writer
    has just made: replacing it would pull the directory from under that writer's next
    create (ENOENT)."""
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):  # not for this filesystem: the check below
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "File exists", str(dst))
    os.rename(src, dst)


def _drop_cached(fd: int) -> None:
    """Lets the kernel drop a written file's pages, clean once fsynced: nothing reads a pack
    back soon, and a backup running on a database server must not push the server's own
    cached pages out with gigabytes of packs (restic's file layer had the same, a sync then
    FADV_DONTNEED in fs.ClearCache). The freed pages are the ones the next pack is written
    into: on the 2-core VM the benchmarks ran on, pages the kernel had never handed out cost
    most of a backup's system time (a 6,000-object bucket backup: 1.5-1.9 s of it instead
    of 3.7-4.0 s, and 7.0 s instead of 8.3 s)."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except (OSError, AttributeError):  # not on this system (macOS has no posix_fadvise)
        pass


def _map_os_error(exc: OSError, action: str, name: str) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"disk full {action} {name}", hint="free space on the repository disk or prune")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StorageError(f"permission denied {action} {name}")
    if exc.errno == errno.EROFS:
        return StorageError(f"read-only filesystem {action} {name}")
    return StorageError(f"cannot {action.replace('ing', '')} {name}: {exc.strerror}")


class LocalStorage:
    """A directory tree. put = temp file + fsync + hard link (fails if the name exists)."""

    def __init__(self, root: Path, *, lock_days: int | None = None) -> None:
        self.root = Path(root)
        self._root = str(self.root)
        self.lock_days = lock_days
        self.url = f"file://{self.root}"
        self._owner_cache: tuple[int, int] | bool | None = False

    def _owner(self) -> tuple[int, int] | None:
        """Who what root creates here is given to: the repository directory's owner, when
        that is another user (root's files would lock that user's pushes out)."""
        if self._owner_cache is not False:
            return self._owner_cache  # type: ignore[return-value]
        if os.geteuid() != 0:
            self._owner_cache = None
            return None
        try:
            st = os.stat(self._root)
        except OSError:
            return None  # not created yet (init): asked again once it is
        self._owner_cache = (st.st_uid, st.st_gid) if st.st_uid != 0 else None
        return self._owner_cache

    def _makedirs(self, directory: Path) -> None:
        """Create ``directory`` and its missing parents, each complete before it appears:
        made under a temporary name, given its mode and owner, then renamed into place, so
        no other writer ever sees it with root's ownership or the umask's mode."""
        if directory.is_dir():
            return
        missing = []
        parent = directory
        while not parent.is_dir():
            missing.append(parent)
            parent = parent.parent
        owner = self._owner()
        for path in reversed(missing):
            tmp = path.with_name(f"{TMP_MARK}d{secrets.token_hex(8)}")
            os.mkdir(tmp, 0o700)
            try:
                os.chmod(tmp, DIR_MODE)
                if owner is not None:
                    os.chown(tmp, *owner)
                _rename_noreplace(tmp, path)
            except OSError as exc:
                os.rmdir(tmp)
                # another writer made it first
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not path.is_dir():
                    raise
                continue
            # the new directory's name is durable before a file in it is said to be stored
            # (put fsyncs only the directory the file lands in)
            self._fsync_dir(path.parent)

    def _path(self, name: str) -> Path:
        return Path(self._path_str(name))

    def _path_str(self, name: str) -> str:
        # a string, not a Path: this runs for every blob a restore reads
        if not name or name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
            raise StorageError(f"invalid object name {name!r}")
        return f"{self._root}/{name}"

    def put(self, name: str, data: bytes, *, retain: bool = True, sha256: str | None = None) -> None:
        # ``sha256`` is not needed: the bytes go from this process's memory to the file
        path = self._path(name)
        tmp = path.with_name(f"{TMP_MARK}{secrets.token_hex(8)}")
        try:
            self._makedirs(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                owner = self._owner()
                if owner is not None:
                    os.fchown(fd, *owner)
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
                if len(data) >= DROP_CACHED_FROM:
                    _drop_cached(fd)
            finally:
                os.close(fd)
            if retain:
                os.chmod(tmp, 0o444)
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise AlreadyExistsError(f"{name} already exists in the repository") from None
            self._fsync_dir(path.parent)
        except OSError as exc:
            raise _map_os_error(exc, "writing", name) from None
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path_str(name)
        try:
            if length is not None:  # one blob of a pack: the restore hot path, kept to 3 syscalls
                fd = os.open(path, os.O_RDONLY)
                try:
                    return os.pread(fd, length, offset)
                finally:
                    os.close(fd)
            fd = os.open(path, os.O_RDONLY)
            try:
                return _read_to_end(fd, offset)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise NotFoundError(f"{name} does not exist in the repository") from None
        except OSError as exc:
            raise _map_os_error(exc, "reading", name) from None

    def stat(self, name: str) -> ObjectStat:
        try:
            st = self._path(name).stat()
        except FileNotFoundError:
            raise NotFoundError(f"{name} does not exist in the repository") from None
        except OSError as exc:
            raise _map_os_error(exc, "reading", name) from None
        return ObjectStat(name, st.st_size, st.st_mtime, self._locked_until(st.st_mtime))

    def _locked_until(self, mtime: float) -> float | None:
        return mtime + self.lock_days * 86400 if self.lock_days else None

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def list(self, prefix: str = "") -> Iterator[ObjectStat]:
        lock = self.lock_days * 86400 if self.lock_days else None
        for name, entry in self._files(prefix):
            try:
                st = entry.stat()
            except FileNotFoundError:  # removed since the folder was read
                continue
            except OSError as exc:
                if not prefix:  # as an unreadable folder when listing everything
                    continue
                raise _map_os_error(exc, "listing", name) from None
            yield ObjectStat(name, st.st_size, st.st_mtime, st.st_mtime + lock if lock else None)

    def names(self, prefix: str = "") -> Iterator[str]:
        """``list`` without the size and time: no stat per file (a folder's entries say
        which are files), ~45 ms of listing 10,000 snapshot headers here. A link (lifeboat
        makes none) is stat-ed all the same, and one that leads nowhere left out as ``list``
        leaves it: a backup takes the packs named here for stored, and reuses their blobs."""
        for name, entry in self._files(prefix):
            if entry.is_symlink():
                try:
                    entry.stat()
                except OSError:
                    continue
            yield name

    def _files(self, prefix: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """The files whose names start with ``prefix``, from the folder the prefix names."""
        return self._files_below(prefix.rsplit("/", 1)[0] if "/" in prefix else "", prefix)

    def _files_below(self, folder: str, prefix: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """The files whose names start with ``prefix`` in ``folder`` (a name relative to the
        root, "" for the root) and the folders below it, with their scandir entries:
        listing 10,000 snapshot headers spent more time building paths than in the stat
        calls. A folder that is not there (or vanished meanwhile) holds nothing. One that
        cannot be read is an error when a namespace was asked for, not an empty folder
        (os.walk skipped it: a prune that lists no snapshots would find every pack unused);
        listing everything (``""``, as `init` does to take back what it wrote) skips it, as a
        directory lifeboat did not make (a filesystem's root holds a `lost+found` only root
        may read). A symbolic link to a folder is not followed."""
        strict = bool(prefix)
        base = f"{folder}/" if folder else ""
        below: list[str] = []
        try:
            entries = os.scandir(f"{self._root}/{folder}" if folder else self._root)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            if not strict:
                return
            raise _map_os_error(exc, "listing", folder or "the repository") from None
        with entries:
            for entry in _entries(entries, folder, strict):
                name = base + entry.name
                try:
                    folder_entry = entry.is_dir()
                except OSError:  # as os.walk: an entry that cannot be examined is not walked into
                    folder_entry = False
                if folder_entry:
                    if not entry.is_symlink():
                        below.append(name)
                    continue
                if entry.name.startswith(TMP_MARK) or not name.startswith(prefix):
                    continue
                yield name, entry
        for name in below:
            if prefix.startswith(name + "/") or name.startswith(prefix):  # others hold no match
                yield from self._files_below(name, prefix)

    def sweep_incomplete(self, older_than: float) -> int:
        """Temp files of puts that were killed before their link (old enough that no live
        writer can still own them)."""
        cutoff = time.time() - older_than
        removed = 0
        for dirpath, _, filenames in os.walk(self.root):
            for filename in filenames:
                if not filename.startswith(TMP_MARK):
                    continue
                full = os.path.join(dirpath, filename)
                try:
                    if os.stat(full).st_mtime < cutoff:
                        os.unlink(full)
                        removed += 1
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise StorageError(f"cannot remove {full}: {exc.strerror}") from None
        return removed

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        until = self._locked_until(st.st_mtime)
        if until is not None and until > time.time() and not (st.st_mode & 0o200):
            raise LockedError(
                f"{name} is under retention until {time.strftime('%Y-%m-%d', time.gmtime(until))}"
            )
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _map_os_error(exc, "deleting", name) from None

    def close(self) -> None:
        pass


def _read_to_end(fd: int, offset: int) -> bytes:
    """The file from ``offset`` on, without a file object: the whole in one read, and one
    more that finds the end (`check` reads 10,000 snapshot headers; a file object's own
    checks cost more than the reads)."""
    want = max(os.fstat(fd).st_size - offset, 0) + 1
    if offset:
        os.lseek(fd, offset, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, want):  # a read is clamped to ~2 GiB: the rest is asked for
        chunks.append(chunk)
        want = max(want - len(chunk), 1 << 16)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _entries(entries: Iterator[os.DirEntry[str]], folder: str, strict: bool) -> Iterator[os.DirEntry[str]]:
    """scandir's entries; an error while reading the folder said as the storage's (or, not
    ``strict``, the folder's entries read so far)."""
    try:
        yield from entries
    except OSError as exc:
        if strict:
            raise _map_os_error(exc, "listing", folder or "the repository") from None
