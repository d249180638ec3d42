"""The `files` asset: directories and files with modes, times, owners and symlinks."""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lifeboat.errors import ConfigError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo import Entry, Repository, RestoreStats, SnapshotInfo

READ_WORKERS = 4


@dataclass(frozen=True)
class SourceItem:
    """One filesystem object to capture, with its path inside the snapshot."""

    path: Path
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
    absolute = []
    for root in roots:
        root = root.resolve() if not root.is_symlink() else root.absolute()
        if not os.path.lexists(root):
            raise ConfigError(f"path {root} does not exist")
        if root not in absolute:  # the same path listed twice is captured once
            absolute.append(root)
    for root, base in zip(absolute, root_names(absolute), strict=True):
        stack = [root]
        while stack:
            current = stack.pop()
            if any(fnmatch.fnmatch(current.name, pat) for pat in exclude) and current != root:
                continue
            st = os.lstat(current)
            yield SourceItem(current, snapshot_name_for(root, current, base), st)
            if stat.S_ISDIR(st.st_mode):
                with os.scandir(current) as it:
                    stack.extend(sorted((Path(e.path) for e in it), reverse=True))


def identity_of(item: SourceItem) -> str:
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
    entry_meta: dict[str, dict[str, str]] | None = None,
) -> SnapshotInfo:
    items = list(walk(roots, exclude))
    progress.start(sum(i.st.st_size for i in items if stat.S_ISREG(i.st.st_mode)))
    with repo.backup(asset, kind, labels=labels, progress=progress) as session:
        regular = []
        for item in items:
            mode = item.st.st_mode
            if stat.S_ISDIR(mode):
                session.add_entry(_entry(item, "dir"))
            elif stat.S_ISLNK(mode):
                session.add_entry(_entry(item, "symlink", target=os.readlink(item.path)))
            elif stat.S_ISREG(mode):
                regular.append(item)

        def add(item: SourceItem) -> None:
            st = item.st
            session.add_file(
                item.name,
                item.path,
                mode=st.st_mode & 0o7777,
                mtime_ns=st.st_mtime_ns,
                uid=st.st_uid,
                gid=st.st_gid,
                identity=identity_of(item),
                meta=(entry_meta or {}).get(item.name),
            )

        with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
            futures = [pool.submit(add, item) for item in regular]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:  # stopped (deadline, SIGTERM, a failure): read no more files
                    future.cancel()
                raise
        return session.commit()


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
    return repo.reader(info).restore_tree(target, force=force, progress=progress)
