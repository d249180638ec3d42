"""A files snapshot's tree: the walk of the source directories, the backup that streams it
into the repository and the restore of a snapshot into a directory."""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from lifeboat.assets.walkfeed import Read, WalkFeeder
from lifeboat.errors import ConfigError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.readahead import AheadFile, close_all, metadata_read_ahead, open_batch_ahead
from lifeboat.repo import Entry, Repository, SnapshotInfo
from lifeboat.repo.chunking import SMALL_FILE
from lifeboat.repo.parents import walk_key

if TYPE_CHECKING:
    from lifeboat.repo.backup import BackupSession
    from lifeboat.repo.reader import RestoreStats  # the restore machinery loads when restoring


class SourceItem(NamedTuple):
    """One filesystem object to capture, with its path inside the snapshot (a tuple: a
    frozen dataclass's ``__init__`` cost a twentieth of an unchanged backup's walk)."""

    path: str  # a string, not a Path: building one per file was a tenth of an unchanged backup
    name: str
    st: os.stat_result


def snapshot_name_for(root: Path, path: Path, base: str | None = None) -> str:
    """Paths inside a snapshot: the root's name (see root_names), then the relative path."""
    rel = path.relative_to(root)
    return "/".join((base or root.name or "root", *rel.parts))


def root_names(roots: Sequence[Path]) -> list[str]:
    """Each root is stored under its basename, unless another root shares that basename:
    then every root sharing it is stored under its absolute path without the leading "/"
    (/x/p1/data and /x/p2/data become x/p1/data and x/p2/data), so both restore. Roots
    with a unique basename keep the name older snapshots used."""
    bases = [root.name or "root" for root in roots]
    shared = {b for b in bases if bases.count(b) > 1}
    return [
        (str(root).lstrip("/") or "root") if base in shared else base
        for root, base in zip(roots, bases, strict=True)
    ]


def walk(roots: Sequence[Path], exclude: Sequence[str] = ()) -> Iterator[SourceItem]:
    """Every filesystem object under the roots (excluded names left out), with its snapshot name."""
    absolute = []
    for root in roots:
        root = root.resolve() if not root.is_symlink() else root.absolute()
        if not os.path.lexists(root):
            raise ConfigError(f"path {root} does not exist")
        if root not in absolute:  # the same path listed twice is captured once
            absolute.append(root)
    # roots in name order, so the whole walk is in walk order (names sorted at every level):
    # the streamed tree and the parent's files are read in that order (repo/parents.py)
    named = sorted(zip(absolute, root_names(absolute), strict=True), key=lambda rb: walk_key(rb[1]))
    for root, base in named:
        yield from _walk_root(root, snapshot_name_for(root, root, base), exclude)


def _walk_root(root: Path, root_name: str, exclude: Sequence[str]) -> Iterator[SourceItem]:
    """Depth first, names in order. Snapshot names are built by joining strings, not with
    Path.relative_to per file (a tenth of a many-small-files backup)."""
    stack: list[tuple[str, str]] = [(str(root), root_name)]
    while stack:
        path, name = stack.pop()
        st = os.lstat(path)
        yield SourceItem(path, name, st)
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(path) as it:
                children = sorted(e.name for e in it)
            if exclude:
                children = [c for c in children if not any(fnmatch.fnmatch(c, pat) for pat in exclude)]
            # strings joined by hand: os.path.join per file was a twentieth of an unchanged backup
            prefix = path if path.endswith("/") else path + "/"
            stack.extend((prefix + child, f"{name}/{child}") for child in reversed(children))


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
    identity: str
    parent: Entry | None

    @classmethod
    def of(cls, item: SourceItem, identity: str, parent: Entry | None) -> _Pending:
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
        with metadata_read_ahead(roots):
            feeder.run(walk(roots, exclude))
        if meta_label is not None:
            session.set_labels({meta_label: str(feeder.with_meta)})
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

    def add(self, item: SourceItem) -> None:
        mode = item.st.st_mode
        if stat.S_ISREG(mode):
            identity = identity_of(item)
            taken, parent = self.take_or_defer(
                item.name, identity, self.session.parent_encoded(item.name, identity)
            )
            if not taken:
                self.queue(_Pending.of(item, identity, parent), item.st.st_size)
            return
        if stat.S_ISDIR(mode):
            self.hand_on(_entry(item, "dir"))
        elif stat.S_ISLNK(mode):
            self.hand_on(_entry(item, "symlink", target=os.readlink(item.path)))
        # sockets, devices, fifos: not captured

    def read_batch(self, batch: list[_Pending]) -> list[Read]:
        opened = _open_ahead(batch)
        try:
            pairs = zip(batch, opened, strict=True)
            return [(self._entry_of(item, ahead), item.identity) for item, ahead in pairs]
        finally:
            close_all(opened)  # those not read (a failure stopped the batch)

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
