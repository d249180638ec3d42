"""Writing inside a restore target without ever leaving it.

Every name is resolved relative to an open descriptor of its parent directory, and every
directory component is opened with O_NOFOLLOW: a symlink already in the target (planted,
or restored from a newer snapshot) is replaced, never followed, so a restore running as
root cannot write, chmod or chown anything outside its target. Metadata goes through the
file's own descriptor (fchown/fchmod/futimens) or *at calls that do not follow links.
"""

from __future__ import annotations

import errno
import hashlib
import os
import resource
import shutil
import stat
import threading
from collections import OrderedDict
from pathlib import Path

from lifeboat.errors import RestoreError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_BLOCK = 64 << 10  # a key file in one read (below malloc's mmap threshold), its end in one more
TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
NAME_MAX = 255
# Directory descriptors kept open once no file in flight needs them: an eighth of the
# descriptor limit, so that a tree visited out of order seldom reopens a directory.
IDLE_FDS = max(64, min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 8))
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to the descriptor (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def apply_file_metadata(fd: int, mode: int, uid: int, gid: int, mtime_ns: int) -> None:
    """Owner (``uid`` -1: left as it is), mode and times, through the file's descriptor."""
    if uid >= 0:
        try:  # before the chmod: a chown clears setuid/setgid
            os.fchown(fd, uid, gid)
        except OSError:
            pass  # the user may not exist on this host; contents matter more
    os.fchmod(fd, mode)
    os.utime(fd, ns=(mtime_ns, mtime_ns))


def split_parent(rel: str) -> tuple[str, str]:
    """("a/b", "c") for "a/b/c"; ("", "c") for "c"."""
    parent, _, name = rel.rpartition("/")
    return parent, name


def temp_name(name: str, suffix: str = ".lifeboat-restore") -> str:
    """A hidden sibling name for writing ``name``; hashed when the plain form would not fit."""
    plain = f".{name}{suffix}"
    if len(os.fsencode(plain)) <= NAME_MAX:
        return plain
    return f".{hashlib.sha256(os.fsencode(name)).hexdigest()[:32]}{suffix}"


def readable_size(n: float) -> str:
    """Bytes in binary units, MiB under a GiB, so that two different figures never print alike."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def free_space(target: Path) -> tuple[int, int]:
    """(bytes available to this user, block size) on the filesystem that holds ``target``."""
    probe = target
    while not probe.exists():
        probe = probe.parent
    st = os.statvfs(probe)
    return st.f_bavail * st.f_frsize, st.f_frsize or 4096


def rounded(size: int, block: int) -> int:
    return -(-size // block) * block


class ShortSpace(RestoreError):
    """The target's filesystem cannot hold what the restore still has to write."""


def refuse_short_space(target: object, needed: int, free: int) -> None:
    """Raise ShortSpace when ``needed`` bytes do not fit in ``free``."""
    if needed > free:
        raise ShortSpace(
            f"not enough space for the restore into {target}: {readable_size(needed)} needed, "
            f"{readable_size(free)} free",
            hint="free space or restore elsewhere",
        )


class TargetDir:
    """A restore target: directory descriptors by relative path, and what this restore
    created (so that a restore that runs out of space can take it back). A target that was
    empty holds nothing but what the restore wrote: emptying it again takes that back, and
    nothing is recorded per file (a million restored names held ~130 MB). Into a target
    that held something (``--force``), each name the restore creates is recorded. An empty
    target belongs to the restore until it ends: what another process writes into it
    meanwhile goes too if the disk fills, or if a restore that skipped its up-front pass
    meets what that pass would have refused (a damaged tree, an unsafe path or key).

    Thread-safe. ``acquire``/``release`` count users of a directory descriptor; a descriptor
    nobody uses stays open (up to IDLE_FDS) for the next file in the same directory."""

    def __init__(self, root: Path, *, fresh: bool = False) -> None:
        self.root = root
        self.created_root = not os.path.lexists(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            # The operator named the target: a link *to* it is their choice and is followed.
            root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise RestoreError(f"cannot open target {root}: {exc.strerror}") from None
        self.lock = threading.Lock()
        self._fds: dict[str, int] = {"": root_fd}
        self._refs: dict[str, int] = {"": 1}  # the root is never closed before close()
        self._idle: OrderedDict[str, None] = OrderedDict()
        # scanned here even when this call made the root: another process may have made
        # (and filled) it first. A target is fresh only if it is still empty now.
        self.was_empty = _is_empty(root_fd)
        self.fresh = fresh and self.was_empty  # whatever this restore writes is new
        self.created: list[tuple[str, bool]] = []  # (path, is_dir), in creation order

    @property
    def root_fd(self) -> int:
        """The target's own descriptor (open until ``close``)."""
        return self._fds[""]

    # -- directories -----------------------------------------------------------------

    def acquire(self, rel: str, create: bool = True) -> int:
        """An open descriptor of directory ``rel``, created (with any missing parents) if needed."""
        with self.lock:
            fd = self._fds.get(rel)
            if fd is not None:
                self._refs[rel] += 1
                self._idle.pop(rel, None)
                return fd
        parent, name = split_parent(rel)
        parent_fd = self.acquire(parent, create)
        try:
            if create:
                fd = self._open_dir(parent_fd, name, rel)
            else:
                fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        finally:
            self.release(parent)
        with self.lock:
            known = self._fds.get(rel)
            if known is not None:  # another thread opened it meanwhile
                os.close(fd)
                fd = known
            else:
                self._fds[rel] = fd
                self._refs[rel] = 0
            self._refs[rel] += 1
            self._idle.pop(rel, None)
        return fd

    def release(self, rel: str) -> None:
        with self.lock:
            self._refs[rel] -= 1
            if self._refs[rel] == 0:
                self._idle[rel] = None
                while len(self._idle) > IDLE_FDS:
                    old, _ = self._idle.popitem(last=False)
                    os.close(self._fds.pop(old))
                    del self._refs[old]

    def _open_dir(self, parent_fd: int, name: str, rel: str) -> int:
        try:
            return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            # A file or a symlink where the snapshot has a directory: the snapshot wins,
            # and a link is removed, never followed.
            self.remove(parent_fd, name, rel)
        try:
            os.mkdir(name, 0o777, dir_fd=parent_fd)
            self.record(rel, True)
        except FileExistsError:
            pass  # another thread made it
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)

    def remove(self, parent_fd: int, name: str, rel: str) -> None:
        """Remove whatever is at ``name``: a directory recursively (never through a link)."""
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self._forget_below(rel)
            shutil.rmtree(name, dir_fd=parent_fd)
        else:
            os.unlink(name, dir_fd=parent_fd)

    def _forget_below(self, rel: str) -> None:
        with self.lock:
            for path in [p for p in self._idle if p == rel or p.startswith(rel + "/")]:
                del self._idle[path]
                os.close(self._fds.pop(path))
                del self._refs[path]

    def record(self, rel: str, is_dir: bool) -> None:
        if not self.was_empty:  # an empty target is emptied again instead
            self.created.append((rel, is_dir))  # list.append is atomic: no lock on the hot path

    def exists(self, parent_fd: int, name: str) -> bool:
        try:
            os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    # -- files -----------------------------------------------------------------------

    def open_temp(self, parent_fd: int, name: str, suffix: str = ".lifeboat-restore") -> tuple[str, int]:
        """A new, exclusive temp file next to ``name``; whatever held its name is removed."""
        tmp = temp_name(name, suffix)
        try:
            return tmp, os.open(tmp, TEMP_FLAGS, 0o600, dir_fd=parent_fd)
        except FileExistsError:
            self.remove(parent_fd, tmp, tmp)  # a leftover, or planted: never written through
            return tmp, os.open(tmp, TEMP_FLAGS, 0o600, dir_fd=parent_fd)

    def install(self, parent_fd: int, tmp: str, name: str, rel: str) -> None:
        """Move a finished temp file to ``name``, replacing a file, link or directory there."""
        new = self.fresh or not self.exists(parent_fd, name)
        try:
            os.replace(tmp, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise
            self.remove(parent_fd, name, rel)  # a directory where the snapshot has a file
            os.replace(tmp, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        if new:
            self.record(rel, False)

    def symlink(self, rel: str, link_target: str) -> tuple[int, str]:
        """Create the link (replacing what is there); returns (parent fd, name) still acquired."""
        parent, name = split_parent(rel)
        parent_fd = self.acquire(parent)
        try:
            new = self.fresh or not self.exists(parent_fd, name)
            try:
                os.symlink(link_target, name, dir_fd=parent_fd)
            except FileExistsError:
                self.remove(parent_fd, name, rel)
                os.symlink(link_target, name, dir_fd=parent_fd)
            if new:
                self.record(rel, False)
        except BaseException:
            self.release(parent)
            raise
        return parent_fd, name

    def read(self, rel: str, limit: int | None = None) -> bytes:
        """A restored regular file's bytes (at most ``limit`` and one more), read without
        following any link, waiting on a pipe put in its place, or making a missing
        directory (that is the restore's to make), through the directories its path leads
        to now (``_walk_now``). OSError for anything else there."""
        parent, name = split_parent(rel)
        parent_fd = self._walk_now(parent)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)
        try:  # no buffered file: a keys restore reads back every file it wrote
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", rel)
            most = None if limit is None else limit + 1  # one more: a larger file is told apart
            pieces, size = [], 0
            while most is None or size < most:
                piece = os.read(fd, READ_BLOCK if most is None else min(READ_BLOCK, most - size))
                if not piece:
                    break
                pieces.append(piece)
                size += len(piece)
            return b"".join(pieces)
        finally:
            os.close(fd)

    def _walk_now(self, rel: str) -> int:
        """A new descriptor of directory ``rel``, walked from the target's path now and
        never from the held descriptors: reading back must see where the path leads now,
        not the directory the restore wrote into (moved away and replaced meanwhile)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for part in rel.split("/") if rel else ():
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            finally:
                os.close(fd)
            fd = child
        return fd

    # -- undo ------------------------------------------------------------------------

    def take_back(self) -> int:
        """Remove what this restore created (newest first); returns how many entries went.
        Files it replaced stay replaced: their old contents are gone."""
        removed = self._empty_again() if self.was_empty else 0
        for rel, is_dir in reversed(self.created):
            parent, name = split_parent(rel)
            try:
                parent_fd = self.acquire(parent, create=False)
            except OSError:
                continue
            try:
                if is_dir:
                    self._forget_below(rel)
                    os.rmdir(name, dir_fd=parent_fd)
                else:
                    os.unlink(name, dir_fd=parent_fd)
                removed += 1
            except OSError:
                pass  # already gone, or holds something this restore did not write
            finally:
                self.release(parent)
        self.created.clear()
        if self.created_root:
            self.close()
            try:
                os.rmdir(self.root)
                removed += 1
            except OSError:
                pass
        return removed

    def _empty_again(self) -> int:
        """Remove everything under the root (which was empty when the restore began)."""
        with self.lock:
            root_fd = self._fds[""]
        removed = 0
        for name in os.listdir(root_fd):
            self._forget_below(name)
            removed += _remove_counted(root_fd, name)
        return removed

    def close(self) -> None:
        with self.lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            self._refs.clear()
            self._idle.clear()


def _is_empty(dir_fd: int) -> bool:
    with os.scandir(dir_fd) as entries:
        return next(entries, None) is None


def _remove_counted(parent_fd: int, name: str) -> int:
    """Remove ``name`` (a directory with its content, never through a link); returns how
    many entries went. What cannot be removed stays, as in ``take_back``."""
    try:
        if not stat.S_ISDIR(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode):
            os.unlink(name, dir_fd=parent_fd)
            return 1
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError:
        return 0
    try:
        removed = sum(_remove_counted(fd, child) for child in os.listdir(fd))
    except OSError:
        return 0
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except OSError:
        return removed
    return removed + 1
