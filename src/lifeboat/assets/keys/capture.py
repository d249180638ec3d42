"""Key material in and out of the repository: capture with keyed fingerprints (what reports
show instead of contents) and restore after the escrow check."""

from __future__ import annotations

import threading
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
    check = _Fingerprints(repo, target)
    try:
        stats = repo.reader(info).restore_tree(
            target, force=force, progress=progress, mode_of=tightened_mode, read_back=check
        )
    finally:
        check.close()
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


class _Fingerprints:
    """Each restored key file's fingerprint taken again from what is on disk (``rows``: the
    JSON report's, in the tree's order). A small file the restore's writer process read
    back equal to its verified bytes is fingerprinted from those bytes; every other one is
    read back here once its batch is written."""

    def __init__(self, repo: Repository, target: Path) -> None:
        self.repo = repo
        self.target = target
        self._found: list[tuple[str, str, str | None, bool]] = []  # path, recorded, kind, match
        self._confirmed: dict[str, str] = {}  # path -> fingerprint, of the batch being written
        self._lock = threading.Lock()  # read_back runs on the writer's reply thread
        self._restored: TargetDir | None = None  # opened once the restore has made the target

    def read_back(self, entry: Entry, data: bytes) -> None:
        if "fingerprint" in entry.meta:
            _, now = fingerprint(data, self.repo.keyed_hash)
            with self._lock:
                self._confirmed[entry.path] = now

    def written(self, entries: list[Entry]) -> None:
        with self._lock:
            confirmed, self._confirmed = self._confirmed, {}
        for entry in entries:
            recorded = entry.meta.get("fingerprint")
            if recorded is None:
                continue
            now = confirmed.get(entry.path)
            if now is None:
                _, now = fingerprint(self._tree().read(entry_name(entry.path)), self.repo.keyed_hash)
            # a tuple until the restore is over: it holds its most memory meanwhile
            self._found.append((entry.path, recorded, entry.meta.get("fingerprint_kind"), now == recorded))

    def rows(self) -> list[dict[str, Any]]:
        """The report's rows: path, fingerprint, kind, match."""
        found, self._found = self._found, []
        return [{"path": p, "fingerprint": f, "kind": k, "match": m} for p, f, k, m in found]

    def _tree(self) -> TargetDir:
        if self._restored is None:
            self._restored = TargetDir(self.target)
        return self._restored

    def close(self) -> None:
        if self._restored is not None:
            self._restored.close()


def fingerprint_lines(files: list[dict[str, Any]]) -> list[str]:
    """Every mismatch, and the first LISTED_MATCHES matches: thirty thousand "ok" lines
    would bury a FAIL (and took a third of such a restore's time to print)."""
    failed = [f for f in files if not f["match"]]
    matched = [f for f in files if f["match"]]
    lines = [f"  FAIL {f['path']} {f['fingerprint']}" for f in failed]
    lines += [f"  ok   {f['path']} {f['fingerprint']}" for f in matched[:LISTED_MATCHES]]
    if len(matched) > LISTED_MATCHES:
        lines.append(f"  ... and {len(matched) - LISTED_MATCHES} more that match (--json lists every file)")
    return lines
