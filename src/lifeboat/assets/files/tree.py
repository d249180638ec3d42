"""A files snapshot's tree: the walk of the source directories, the backup that streams it
into the repository and the restore of a snapshot into a directory."""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from lifeboat.assets.walkfeed import Read, WalkFeeder
from lifeboat.errors import ConfigError, SourceChanged, StorageError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.readahead import AheadFile, close_all, metadata_read_ahead, open_batch_ahead
from lifeboat.repo import Entry, Repository, SnapshotInfo
from lifeboat.repo.chunking import SMALL_FILE
from lifeboat.repo.parents import walk_key

RACY_NS = 2_000_000_000  # see _Feeder.settled_before

if TYPE_CHECKING:
    from lifeboat.repo.backup import BackupSession
    from lifeboat.repo.reader import RestoreStats  # the restore machinery loads when restoring


class SourceItem(NamedTuple):
    """One filesystem object to capture, with its path inside the snapshot (a tuple: a
    frozen dataclass's ``__init__`` cost a twentieth of an unchanged backup's walk)."""

    path: str  # a string, not a Path: building one per file was a tenth of an unchanged backup
    name: str
    st: os.stat_result


def root_names(roots: Sequence[Path]) -> list[str]:
    """Each root is stored under its basename, unless that name is another root's too, or
    holds another root's name inside it (``tmp`` and ``tmp/x/r2/data``): then it is stored
    under its absolute path without the leading "/" (/x/p1/data and /x/p2/data become
    x/p1/data and x/p2/data), so every root restores to a place of its own. Roots with a
    unique basename keep the name older snapshots used. Absolute names clash only when
    one root is inside another under the same name (/x and /x/x): refused."""
    names = [root.name or "root" for root in roots]
    while clashing := [i for i, name in enumerate(names) if _clashes(name, names)]:
        absolute = {i: str(roots[i]).lstrip("/") or "root" for i in clashing}
        if all(names[i] == name for i, name in absolute.items()):
            both = " and ".join(str(roots[i]) for i in clashing)
            raise ConfigError(f"paths {both} would be stored under the same name", hint="list one of them")
        for i, name in absolute.items():
            names[i] = name
    return names


def _clashes(name: str, names: list[str]) -> bool:
    """Whether another root's name equals ``name``, or one holds the other as a directory."""
    seen = 0
    for other in names:
        if other == name:
            seen += 1
        elif other.startswith(name + "/") or name.startswith(other + "/"):
            return True
    return seen > 1


def walk(
    roots: Sequence[Path], exclude: Sequence[str] = (), gone: Callable[[], None] = lambda: None
) -> Iterator[SourceItem]:
    """Every filesystem object under the roots (excluded names left out), with its snapshot
    name. A root that is a symbolic link is followed: it is what the policy asks for (a
    keys directory linked from where the application looks for it), stored under the
    link's name. ``gone`` is told of each entry deleted between its directory's listing
    and its lstat."""
    named_as: list[Path] = []  # how each root is named (its path, resolved unless a link)
    walked: list[Path] = []  # what is walked (links followed)
    for root in roots:
        real = _real_root(root)
        if real in walked:  # the same path listed twice is captured once
            continue
        named_as.append(root.absolute() if root.is_symlink() else real)
        walked.append(real)
    # roots in name order, so the whole walk is in walk order (names sorted at every level):
    # the streamed tree and the parent's files are read in that order (repo/parents.py)
    named = sorted(zip(walked, root_names(named_as), strict=True), key=lambda rb: walk_key(rb[1]))
    for root, base in named:
        yield from _walk_root(root, base, exclude, gone)


def _real_root(root: Path) -> Path:
    """The root's absolute path with every link resolved; a clear error when there is none."""
    try:
        return root.resolve(strict=True)
    except FileNotFoundError:
        if os.path.lexists(root):
            target = os.readlink(root)
            raise ConfigError(f"path {root} is a symbolic link to {target}, which does not exist") from None
        raise ConfigError(f"path {root} does not exist") from None
    except (OSError, RuntimeError) as exc:  # a loop of links, a name too long
        raise ConfigError(f"path {root} cannot be resolved: {exc}") from None


def _walk_root(
    root: Path, root_name: str, exclude: Sequence[str], gone: Callable[[], None]
) -> Iterator[SourceItem]:
    """Depth first, names in order. Snapshot names are built by joining strings, not with
    Path.relative_to per file (a tenth of a many-small-files backup). What is deleted while
    the walk runs is left out, as if the walk had come a moment later; what cannot be read
    stops the backup with its path named."""
    stack: list[tuple[str, str]] = [(str(root), root_name)]
    while stack:
        path, name = stack.pop()
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):  # its directory was listed before
            gone()
            continue
        except OSError as exc:
            raise unreadable(path, exc) from None
        yield SourceItem(path, name, st)
        if stat.S_ISDIR(st.st_mode):
            try:
                with os.scandir(path) as it:
                    children = sorted(e.name for e in it)
            except (FileNotFoundError, NotADirectoryError):
                gone()  # gone since: kept as the walk saw it, empty
                continue
            except OSError as exc:
                raise unreadable(path, exc) from None
            if exclude:
                children = [c for c in children if not any(fnmatch.fnmatch(c, pat) for pat in exclude)]
            # strings joined by hand: os.path.join per file was a twentieth of an unchanged backup
            prefix = path if path.endswith("/") else path + "/"
            if not all(c.isascii() for c in children):
                for child in children:
                    check_utf8(prefix + child)
            stack.extend((prefix + child, f"{name}/{child}") for child in reversed(children))


def unreadable(path: str, exc: OSError) -> StorageError:
    """The one-line error of a source path the backup cannot read."""
    return StorageError(
        f"cannot read {os.fsencode(path)!r}: {exc.strerror or exc}",
        hint="let the user lifeboat runs as read it, or exclude it",
    )


def check_utf8(text: str) -> None:
    """Snapshot names and link targets are UTF-8 text: a file name in another encoding
    stops the backup with its bytes shown, rather than a snapshot without it."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise StorageError(
            f"{os.fsencode(text)!r} is not UTF-8 and cannot be stored",
            hint="rename it (convmv converts a tree's names) or exclude it",
        ) from None


@dataclass(frozen=True, slots=True)
class _Pending:
    """A regular file found by the walk, waiting for a reader: its path as a string, the
    stat fields the entry needs and the parent's entry when the file is unchanged."""

    path: str
    name: str
    size: int
    mode: int
    mtime_ns: int
    uid: int
    gid: int
    identity: str | None  # None: changed too recently for the next backup to trust
    parent: Entry | None
    walked: tuple[int, int]  # device and inode: the file opened must be this one

    @classmethod
    def of(cls, item: SourceItem, identity: str | None, parent: Entry | None) -> _Pending:
        st = item.st
        return cls(
            item.path,
            item.name,
            st.st_size,
            st.st_mode & 0o7777,
            st.st_mtime_ns,
            st.st_uid,
            st.st_gid,
            identity,
            parent,
            (st.st_dev, st.st_ino),
        )


def identity_of(item: SourceItem) -> str:
    """What changes whenever a file's content would: path, size, mtime and inode."""
    st = item.st
    return f"{item.name}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_ctime_ns}"


def backup_paths(
    repo: Repository,
    asset: str,
    roots: Sequence[Path],
    *,
    kind: str = "files",
    exclude: Sequence[str] = (),
    labels: dict[str, str] | None = None,
    progress: ProgressSink = NO_PROGRESS,
    describe: Describe | None = None,
    meta_label: str | None = None,
) -> SnapshotInfo:
    """Capture files and directories into one committed snapshot (unchanged files reused).

    The walk, the reads and the tree go together: files are read a few batches ahead of
    the walk, and each entry reaches the session's streamed tree in walk order, so what is
    held is the window of batches and the directories open on the walk's path, never a
    list of every file (memory does not grow with the number of files).

    ``describe`` gives each file read its entry metadata from the bytes stored (the keys
    kind: fingerprints); an unchanged file keeps its parent's. ``meta_label`` names the
    snapshot label that counts the files carrying metadata."""
    with repo.backup(asset, kind, labels=labels, progress=progress) as session:
        session.stream_tree()
        progress.start(None)  # the total is known only once the walk is over
        feeder = _Feeder(session, describe)
        with metadata_read_ahead([os.path.realpath(root) for root in roots]):  # links followed, as walked
            feeder.run(walk(roots, exclude, feeder.count_vanished))
        counted = {"vanished": feeder.vanished, "not_captured": feeder.not_captured}
        if meta_label is not None:
            counted[meta_label] = feeder.with_meta
        session.set_labels({name: str(n) for name, n in counted.items() if n or name == meta_label})
        return session.commit()


@dataclass(frozen=True)
class Describe:
    """Entry metadata a kind derives from each file's content as it is stored."""

    of: Callable[[bytes], dict[str, str] | None]
    max_size: int  # larger files are stored without it (read whole to describe them)


class _Feeder(WalkFeeder[SourceItem, _Pending]):
    """The files and keys kinds' walk: regular files read, directories and links handed on."""

    def __init__(self, session: BackupSession, describe: Describe | None) -> None:
        super().__init__(session)
        self.describe = describe
        # a file changed this close to the walk may be read while a write is under way
        # (its time is set before its bytes are copied): read, but not trusted as unchanged
        # by the next backup (git's "racy clean" rule)
        self.settled_before = time.time_ns() - RACY_NS
        self.not_captured = 0  # sockets, devices, fifos
        self.vanished = 0  # files deleted or replaced since the walk saw them: left out
        self._count_lock = threading.Lock()

    def add(self, item: SourceItem) -> None:
        st = item.st
        mode = st.st_mode
        if stat.S_ISREG(mode):
            identity = identity_of(item)
            taken, parent = self.take_or_defer(
                item.name, identity, self.session.parent_encoded(item.name, identity)
            )
            if not taken:
                settled = st.st_mtime_ns < self.settled_before
                self.queue(_Pending.of(item, identity if settled else None, parent), st.st_size)
            return
        if stat.S_ISDIR(mode):
            self.hand_on(_entry(item, "dir"))
        elif stat.S_ISLNK(mode):
            try:
                target = os.readlink(item.path)
            except (FileNotFoundError, NotADirectoryError):  # deleted since the walk saw it
                self.count_vanished()
                return
            except OSError as exc:
                if exc.errno == errno.EINVAL:  # no longer a link: replaced since the walk
                    self.count_vanished()
                    return
                raise unreadable(item.path, exc) from None
            check_utf8(target)
            self.hand_on(_entry(item, "symlink", target=target))
        else:
            self.not_captured += 1

    def read_batch(self, batch: list[_Pending]) -> list[Read]:
        opened = _open_ahead(batch)
        try:
            return [self._read(item, ahead) for item, ahead in zip(batch, opened, strict=True)]
        finally:
            close_all(opened)  # those not read (a failure stopped the batch)

    def _read(self, item: _Pending, opened: AheadFile | None) -> Read:
        try:
            return self._entry_of(item, opened), item.identity
        except SourceChanged:
            self.count_vanished()
            return None

    def count_vanished(self) -> None:
        with self._count_lock:  # the walk's thread and reader threads
            self.vanished += 1

    def _entry_of(self, item: _Pending, opened: AheadFile | None) -> Entry:
        """The file's entry, read or taken from its parent (which keeps its metadata: it
        describes the chunks kept)."""
        describe = self.describe
        return self.session.read_file(
            item.name,
            item.path,
            mode=item.mode,
            mtime_ns=item.mtime_ns,
            uid=item.uid,
            gid=item.gid,
            parent=item.parent,
            describe=describe.of if describe is not None and item.size <= describe.max_size else None,
            opened=opened,
            walked=item.walked,
        )


def _open_ahead(batch: list[_Pending]) -> list[AheadFile | None]:
    """The small files of the batch opened at once (as many as ``open_batch_ahead`` lets a
    batch hold), the kernel asked to read each (it reads them while the first ones are
    being stored): one thread reading a cold tree would otherwise wait on the disk once per
    file. Not files likely taken from the parent (nothing to read), nor large ones (their
    reads are large enough to keep the disk busy)."""
    return open_batch_ahead(
        (item.path, item.size) if item.parent is None and item.size < SMALL_FILE else None for item in batch
    )


def _entry(item: SourceItem, kind: Literal["dir", "symlink"], target: str = "") -> Entry:
    st = item.st
    return Entry(
        path=item.name,
        type=kind,
        mode=st.st_mode & 0o7777,
        mtime_ns=st.st_mtime_ns,
        uid=st.st_uid,
        gid=st.st_gid,
        target=target,
    )


def restore_snapshot(
    repo: Repository,
    info: SnapshotInfo,
    target: Path,
    *,
    force: bool = False,
    progress: ProgressSink = NO_PROGRESS,
) -> RestoreStats:
    """Restore a files snapshot's tree into `target`, every file verified."""
    return repo.reader(info).restore_tree(target, force=force, progress=progress)
