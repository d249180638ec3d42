"""Key material in and out of the repository: capture with keyed fingerprints (what reports
show instead of contents) and restore after the escrow check."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifeboat.assets.files.tree import Describe, backup_paths
from lifeboat.crypto.fingerprint import fingerprint
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo import Entry, Repository, SnapshotInfo
from lifeboat.repo.reader import entry_name
from lifeboat.targetdir import TargetDir

if TYPE_CHECKING:
    from lifeboat.assets.keys.model import KeysAsset
    from lifeboat.policy import Policy

MAX_KEY_FILE = 1 << 20  # key material is small; larger files are captured but not fingerprinted
LISTED_MATCHES = 50  # matching fingerprints a human summary lists (--json lists every file)


def fingerprint_of(repo: Repository) -> Describe:
    """A stored key file's fingerprint (what reports show instead of its contents), taken
    from the bytes stored; an unchanged file keeps its parent's."""

    def meta(content: bytes) -> dict[str, str]:
        kind, fp = fingerprint(content, repo.keyed_hash)
        return {"fingerprint": fp, "fingerprint_kind": kind}

    return Describe(meta, MAX_KEY_FILE)


def backup_keys(
    policy: Policy, asset: KeysAsset, repo: Repository, progress: ProgressSink = NO_PROGRESS
) -> SnapshotInfo:
    """Capture the key files with their fingerprints as entry metadata."""
    return backup_paths(
        repo,
        asset.name,
        [Path(p) for p in asset.paths],
        kind="keys",
        exclude=asset.exclude,
        progress=progress,
        describe=fingerprint_of(repo),
        meta_label="key_files",
    )


def tightened_mode(entry: Entry) -> int:
    """Restored key material is private: files 0600, directories 0700, unless the snapshot
    recorded something stricter."""
    if entry.type == "dir":
        return (entry.mode & 0o700) | 0o700
    return entry.mode & 0o600


def restore_keys(
    repo: Repository, info: SnapshotInfo, target: Path, force: bool, progress: ProgressSink = NO_PROGRESS
) -> dict[str, Any]:
    """Restore a keys snapshot into `target` and compare fingerprints (the JSON report)."""
    check = _Fingerprints(repo)
    stats = repo.reader(info).restore_tree(
        target, force=force, progress=progress, mode_of=tightened_mode, read_back=check
    )
    files = check.rows()
    ok = all(f["match"] for f in files)
    summary = [
        f"{info.asset}: restored {stats.files} key files from snapshot {info.short_id} into {target} "
        f"(files 0600, directories 0700); {sum(f['match'] for f in files)} of {len(files)} "
        "fingerprints match the backup"
    ]
    summary += fingerprint_lines(files)
    return {
        "ok": ok,
        "asset": info.asset,
        "snapshot": info.id,
        "target": str(target),
        "files": stats.files,
        "bytes": stats.bytes,
        "keys": files,
        "summary": summary,
    }


_Row = tuple[str, Any, Any, bool, "str | None"]  # path, recorded fingerprint, kind, match, error


class _Fingerprints:
    """Each restored key file's fingerprint taken again from what is on disk (``rows``: the
    JSON report's, in the tree's order). A small file the restore's writer process read
    back equal to its verified bytes is fingerprinted from those bytes; every other one is
    read back here, through the restore's target descriptor, once its batch is written."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._found: list[_Row] = []
        # path -> fingerprint, of the batch being written (None: two entries of that path)
        self._confirmed: dict[str, str | None] = {}
        self._others: set[str] = set()  # paths of the links and directories restored
        self._lock = threading.Lock()  # read_back runs on the writer's reply thread

    def read_back(self, entry: Entry, data: bytes) -> None:
        if "fingerprint" not in entry.meta:
            return
        taken = fingerprint(data, self.repo.keyed_hash)[1]
        with self._lock:  # of two entries of one path (overlapping roots), the disk says which is there
            self._confirmed[entry.path] = None if entry.path in self._confirmed else taken

    def written(self, tree: TargetDir, entries: list[Entry]) -> None:
        with self._lock:
            confirmed, self._confirmed = self._confirmed, {}
        for entry in entries:
            if "fingerprint" not in entry.meta:  # a link, or a file too large to be a key
                self._others.add(entry.path)
                continue
            now, error = confirmed.get(entry.path), None
            if now is None:
                now, error = self._on_disk(tree, entry.path)
            # a tuple until the restore is over: it holds its most memory meanwhile
            self._found.append(
                _row(entry.path, entry.meta["fingerprint"], entry.meta.get("fingerprint_kind"), now, error)
            )

    def finished(self, tree: TargetDir, dirs: list[Entry]) -> None:
        """A path restored twice (two entries, or a key file and a link or directory of the
        same name) is judged again by what holds it now."""
        counts = Counter(row[0] for row in self._found)
        again = {path for path, count in counts.items() if count > 1}
        again |= {path for path in self._others | {d.path for d in dirs} if path in counts}
        self._found = [self._again(tree, row) if row[0] in again else row for row in self._found]

    def rows(self) -> list[dict[str, Any]]:
        """The report's rows: path, fingerprint, kind, match (and why a file could not be
        read back)."""
        found, self._found = self._found, []
        return [
            {"path": p, "fingerprint": f, "kind": k, "match": m} | ({"error": e} if e else {})
            for p, f, k, m, e in found
        ]

    def _again(self, tree: TargetDir, row: _Row) -> _Row:
        now, error = self._on_disk(tree, row[0])
        return _row(row[0], row[1], row[2], now, error)

    def _on_disk(self, tree: TargetDir, path: str) -> tuple[str | None, str | None]:
        """A restored file's fingerprint read from the disk, or why it could not be read."""
        try:
            data = tree.read(entry_name(path), limit=MAX_KEY_FILE)
        except OSError as exc:
            return None, f"cannot read it back: {exc.strerror or exc}"
        return fingerprint(data, self.repo.keyed_hash)[1], None


def _row(path: str, recorded: Any, kind: Any, now: str | None, error: str | None) -> _Row:
    """A file matches only when it was read back and its fingerprint is the recorded one
    (a file that could not be read never matches, whatever the snapshot recorded)."""
    return path, recorded, kind, error is None and now is not None and now == recorded, error


def fingerprint_lines(files: list[dict[str, Any]]) -> list[str]:
    """Every mismatch, and the first LISTED_MATCHES matches: thirty thousand "ok" lines
    would bury a FAIL (and took a third of such a restore's time to print)."""
    failed = [f for f in files if not f["match"]]
    matched = [f for f in files if f["match"]]
    lines = [
        f"  FAIL {f['path']} {f['fingerprint']}" + (f" ({f['error']})" if "error" in f else "")
        for f in failed
    ]
    lines += [f"  ok   {f['path']} {f['fingerprint']}" for f in matched[:LISTED_MATCHES]]
    if len(matched) > LISTED_MATCHES:
        lines.append(f"  ... and {len(matched) - LISTED_MATCHES} more that match (--json lists every file)")
    return lines
