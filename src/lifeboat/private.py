"""Local files only their owner may read: the state dir, WAL spools and staging, caches.

WAL segments, the parent cache (every backed-up file's name and SHA-256, key files too)
and the audit log say more about a system than their names suggest; another local user
must not read them, whatever the umask of the process that created them.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from lifeboat.errors import ConfigError

DIR_MODE = 0o700
FILE_MODE = 0o600


def state_dir_mode() -> int:
    """0700; as root 0711 (others may traverse, never list), because drills restore a
    PostgreSQL cluster below it that runs as the postgres user and must reach its data
    directory. Every file below is 0600 and every directory lifeboat creates there 0700
    except that cluster's own, which PostgreSQL keeps 0700 itself."""
    return 0o711 if os.geteuid() == 0 else DIR_MODE


def private_dir(path: Path, mode: int = DIR_MODE, *, tighten: bool = True, named: bool = False) -> Path:
    """Create ``path`` and tighten it to ``mode`` when we own it: a directory an older
    version created 0755 is fixed on first use. Missing parents are created 0700 too
    (``mkdir(parents=True)`` would give them the umask's 0755). A symbolic link at ``path``
    is refused: lifeboat never makes one among its own directories, and one planted there
    would have it (often root) tighten, and write its files into, a directory elsewhere
    (``/etc/sudoers.d``). ``named``: a path the operator named (the state dir itself), which
    may be a link to where they keep it; so may one that is not ``tighten``ed (the state
    dir, as the parent of its audit log)."""
    if tighten and not named and path.is_symlink():
        raise planted(path, "a symbolic link")
    missing = []
    for parent in [path, *path.parents]:
        if parent.exists():
            break
        missing.append(parent)
    try:
        for directory in reversed(missing[1:]):
            directory.mkdir(mode=DIR_MODE, exist_ok=True)
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError as exc:
        raise ConfigError(
            f"cannot create {path}: {exc.strerror or exc}",
            hint="lifeboat's state dir ([state] dir) must be writable by the user running it",
        ) from None
    if not tighten:  # an existing directory someone else manages (the state dir itself)
        return path
    try:
        # the directory itself, never through a link swapped in meanwhile (a planted one
        # would have root close a system directory to everyone); the operator's own link
        # to their state dir is followed
        st = path.stat() if named else path.lstat()
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode, follow_symlinks=named)
    except (OSError, NotImplementedError):
        pass  # not ours to change; the files inside are still 0600
    return path


def _give(fd: int, owner: tuple[int, int]) -> None:
    """The file to ``owner`` where this process may give it: root without CAP_CHOWN (a
    hardened unit), an owner unmapped in a user namespace, root squashed on NFS keep it."""
    try:
        os.fchown(fd, *owner)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EINVAL):
            raise


def private_opener(path: str, flags: int) -> int:
    """``open(..., opener=private_opener)``: files are created 0600, and one an older
    version left 0644 is tightened when we own it. Only a regular file is opened: a symbolic
    link planted in the state dir would have lifeboat (often root) append to, or read, a
    file elsewhere, and a FIFO would hold every command up. Nor is a hard link in a
    directory another user may write (a WAL spool is PostgreSQL's user's): where
    ``fs.protected_hardlinks`` is off, that user can link any file there. The directory
    judged is the one the file is opened in (held open meanwhile: that user may rename
    directories under its own), and a file is truncated only once it passed the checks."""
    truncate, flags = flags & os.O_TRUNC, flags & ~os.O_TRUNC
    where, name = os.path.split(os.path.abspath(path))
    # O_PATH: search permission is enough, as for the open by path it replaces (root's
    # state dir is 0711 to PostgreSQL's user)
    directory = os.open(where, getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _open_regular(Path(path), name, flags, directory)
        try:
            st = os.fstat(fd)
            if st.st_nlink > 1 and _others_may_write(os.fstat(directory)):
                raise planted(Path(path), "a hard link to a file with another name")
            os.set_blocking(fd, not flags & os.O_NONBLOCK)
            if truncate:
                os.ftruncate(fd, 0)
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(directory)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        pass  # another user's file: not ours to change
    return fd


def _open_regular(path: Path, name: str, flags: int, directory: int) -> int:
    """``name`` in ``directory`` (an open descriptor), never through a link, and only a
    regular file."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK, FILE_MODE, dir_fd=directory)
    except BlockingIOError:  # a lease (Samba, knfsd) being broken: wait for it, as open does
        if not stat.S_ISREG(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode):
            raise planted(path, "not a regular file") from None
        fd = os.open(name, flags | os.O_NOFOLLOW, FILE_MODE, dir_fd=directory)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise planted(path, "a symbolic link") from None
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads
            raise planted(path, "not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise planted(path, "not a regular file")
    return fd


def _others_may_write(directory: os.stat_result) -> bool:
    """Whether a user other than root and this process's own may add names to a directory."""
    owner_is_trusted = directory.st_uid in (0, os.geteuid())
    return not owner_is_trusted or bool(directory.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def planted(path: Path, what: str) -> ConfigError:
    """The error for something lifeboat never makes, found where it keeps its own file."""
    return ConfigError(
        f"{path} is {what}: lifeboat keeps its own files there and does not write through it",
        hint=(
            "remove it: lifeboat never makes one. If you made it to keep lifeboat's files on "
            "another disk, set [state] dir there (or link the state dir itself) instead; "
            "if you did not, find out who could write there"
        ),
    )


def write_private(
    path: Path, data: bytes, *, fsync: bool = False, owner: tuple[int, int] | None = None
) -> None:
    """Replace ``path`` atomically with ``data``, mode 0600 (``replacing_private``)."""
    with replacing_private(path, fsync=fsync, owner=owner) as fh:
        fh.write(data)


@contextmanager
def replacing_private(
    path: Path, *, fsync: bool = False, owner: tuple[int, int] | None = None
) -> Iterator[BinaryIO]:
    """A file written piece by piece that replaces ``path`` atomically, mode 0600 (and
    ``owner``'s: uid, gid), once the block ends (nothing replaced when it raises). It is
    written under a new name of its own: never through a link planted at a name known in
    advance, and never into another writer's file (threads of one process, or processes
    of one pid in two containers sharing the state dir)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask took off
        if owner is not None:
            _give(fd, owner)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)  # a link at ``path`` itself is replaced, never followed
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
