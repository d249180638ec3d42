"""Reading snapshots back: trees, verified file contents, parallel restores to a directory."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lifeboat.errors import IntegrityError, RestoreError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo.model import Entry, SnapshotInfo

if TYPE_CHECKING:
    from lifeboat.repo.repository import Repository

PREFETCH = 8


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    seconds: float = 0.0
    verified: int = 0
    failed: list[str] = field(default_factory=list)


def safe_relative(path: str) -> Path:
    """A tree path as a relative Path that cannot escape the restore target."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise RestoreError(f"refusing unsafe path {path!r} in snapshot")
    return Path(*parts)


def target_is_empty(target: Path) -> bool:
    return not target.exists() or (target.is_dir() and not any(target.iterdir()))


class SnapshotReader:
    def __init__(self, repo: Repository, info: SnapshotInfo) -> None:
        self.repo = repo
        self.info = info
        self._entries: list[Entry] | None = None

    def entries(self) -> list[Entry]:
        if self._entries is None:
            raw = b"".join(self.repo.read_blob(blob_id) for blob_id in self.info.tree)
            try:
                data = json.loads(raw)
                self._entries = [Entry.from_json(e) for e in data["entries"]]
            except (ValueError, KeyError, TypeError):
                raise IntegrityError(f"tree of snapshot {self.info.short_id} is damaged") from None
        return self._entries

    def open(self, entry: Entry) -> Iterator[bytes]:
        """The file's bytes, chunk by chunk, each authenticated and id-checked."""
        if len(entry.chunks) <= 1:
            for chunk_id in entry.chunks:
                yield self.repo.read_blob(chunk_id)
            return
        with ThreadPoolExecutor(max_workers=min(PREFETCH, len(entry.chunks))) as pool:
            futures = []
            it = iter(entry.chunks)
            for chunk_id in it:
                futures.append(pool.submit(self.repo.read_blob, chunk_id))
                if len(futures) >= PREFETCH:
                    break
            for chunk_id in it:
                yield futures.pop(0).result()
                futures.append(pool.submit(self.repo.read_blob, chunk_id))
            for future in futures:
                yield future.result()

    def read(self, entry: Entry) -> bytes:
        return b"".join(self.open(entry))

    def restore_tree(
        self,
        target: Path,
        *,
        force: bool = False,
        progress: ProgressSink = NO_PROGRESS,
        select: Callable[[Entry], bool] | None = None,
        workers: int = 8,
        chown: bool | None = None,
    ) -> RestoreStats:
        """Write the snapshot's tree into ``target``; verifies every file's SHA-256."""
        import time

        started = time.monotonic()
        if not force and not target_is_empty(target):
            raise RestoreError(
                f"target {target} is not empty", hint="choose an empty directory or pass --force"
            )
        entries = [e for e in self.entries() if select is None or select(e)]
        progress.start(sum(e.size for e in entries if e.type == "file"))
        target.mkdir(parents=True, exist_ok=True)
        stats = RestoreStats()
        do_chown = os.geteuid() == 0 if chown is None else chown
        lock = threading.Lock()
        dirs = [e for e in entries if e.type == "dir"]
        for entry in dirs:
            (target / safe_relative(entry.path)).mkdir(parents=True, exist_ok=True)
            stats.dirs += 1

        def restore_file(entry: Entry) -> None:
            dest = target / safe_relative(entry.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_symlink() or (dest.exists() and not dest.is_file()):
                dest.unlink()
            sha = hashlib.sha256()
            tmp = dest.with_name(f".{dest.name}.lifeboat-restore")
            with open(tmp, "wb") as fh:
                for chunk in self.open(entry):
                    sha.update(chunk)
                    fh.write(chunk)
                    progress.advance(len(chunk))
            if entry.sha256 and sha.hexdigest() != entry.sha256:
                tmp.unlink(missing_ok=True)
                raise IntegrityError(f"restored {entry.path} does not match its recorded SHA-256")
            os.replace(tmp, dest)
            apply_metadata(dest, entry, do_chown)
            with lock:
                stats.files += 1
                stats.verified += 1
                stats.bytes += entry.size

        files = [e for e in entries if e.type == "file"]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(restore_file, e) for e in files]:
                future.result()
        for entry in entries:
            if entry.type == "symlink":
                dest = target / safe_relative(entry.path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.is_symlink() or dest.exists():
                    dest.unlink()
                os.symlink(entry.target, dest)
                if do_chown and entry.uid is not None:
                    os.lchown(dest, entry.uid, entry.gid if entry.gid is not None else -1)
                os.utime(dest, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
                stats.symlinks += 1
        for entry in sorted(dirs, key=lambda e: e.path.count("/"), reverse=True):
            apply_metadata(target / safe_relative(entry.path), entry, do_chown)
        stats.seconds = round(time.monotonic() - started, 3)
        return stats


def apply_metadata(dest: Path, entry: Entry, chown: bool) -> None:
    if chown and entry.uid is not None:
        try:
            os.chown(dest, entry.uid, entry.gid if entry.gid is not None else -1)
        except OSError:
            pass  # the user may not exist on this host; contents matter more
    os.chmod(dest, entry.mode & 0o7777)
    os.utime(dest, ns=(entry.mtime_ns, entry.mtime_ns))
