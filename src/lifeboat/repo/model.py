"""The repository's public data types: tree entries, snapshots, named refs, reports."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from lifeboat.repo.idtable import IdTable

EntryType = Literal["file", "dir", "symlink"]


@dataclass(slots=True)  # one per file of a backup, all alive until the commit: no __dict__
class Entry:
    """One node of a snapshot tree. Encrypted with the tree: names and meta are secret.

    ``path`` is ``/``-separated and relative to the snapshot root (for an object-storage
    snapshot, the object key itself). ``meta`` is free-form, asset-specific JSON.
    """

    path: str
    type: EntryType = "file"
    size: int = 0
    mode: int = 0o644
    mtime_ns: int = 0
    uid: int | None = None
    gid: int | None = None
    sha256: str = ""
    chunks: list[str] = field(default_factory=list)
    target: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    subtree: list[str] = field(default_factory=list)  # a directory's own tree (tree format 2)

    def to_json(self) -> dict[str, Any]:
        # Hand-written, not dataclasses.asdict: this runs for every file of every snapshot,
        # and asdict's recursive deep copy was a quarter of a many-small-files backup. Each
        # field in turn, not a loop over their names: that loop's getattr and isinstance
        # calls were most of its time. The order is the fields' (it is the stored form's).
        """The entry as stored in a tree: every field but the empty ones (None, "", [], {})."""
        data: dict[str, Any] = {"path": self.path, "type": self.type}
        if (size := self.size) not in _EMPTY:
            data["size"] = size
        if (mode := self.mode) not in _EMPTY:
            data["mode"] = mode
        if (mtime_ns := self.mtime_ns) not in _EMPTY:
            data["mtime_ns"] = mtime_ns
        if (uid := self.uid) not in _EMPTY:
            data["uid"] = uid
        if (gid := self.gid) not in _EMPTY:
            data["gid"] = gid
        if (sha256 := self.sha256) not in _EMPTY:
            data["sha256"] = sha256
        if (chunks := self.chunks) not in _EMPTY:
            data["chunks"] = _copied(chunks)
        if (target := self.target) not in _EMPTY:
            data["target"] = target
        if (meta := self.meta) not in _EMPTY:
            data["meta"] = _copied(meta)
        if (subtree := self.subtree) not in _EMPTY:
            data["subtree"] = _copied(subtree)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        """The entry from its stored form."""
        return cls(**data)


_EMPTY: tuple[Any, ...] = (None, "", [], {})  # what a stored entry leaves out


def _copied(value: Any) -> Any:
    """A list or dict copied (the stored form shares nothing with the entry), else as is."""
    return value.copy() if isinstance(value, list | dict) else value


@dataclass
class SnapshotStats:
    """What a backup read, stored and reused."""

    files: int = 0
    dirs: int = 0
    bytes: int = 0  # logical bytes of all files
    new_bytes: int = 0  # logical bytes of chunks that were not in the repository yet
    stored_bytes: int = 0  # bytes written to storage for new chunks (compressed+encrypted)
    chunks: int = 0
    new_chunks: int = 0
    reused_files: int = 0  # files taken from the parent without reading them
    seconds: float = 0.0


# The snapshot label a backup sets when lines of its parent cache failed their MAC (those
# files were read again): somebody rewrote the state dir (repo/parents.py)
PARENT_CACHE_REJECTED = "parent_cache_rejected"
# label: when the data a snapshot holds was read, when that is earlier than its commit (a
# sharded bucket backup: the listing or the inventory report; assets/objects/shards.py)
DATA_AS_OF = "data_as_of"


@dataclass
class SnapshotInfo:
    """A committed snapshot's header. Readable with the backup key alone (no secrets)."""

    id: str
    asset: str
    kind: str
    time: datetime
    host: str
    labels: dict[str, str]
    stats: SnapshotStats
    tree: list[str]
    key_id: str
    parent: str | None = None
    tree_format: int = 1  # 1: one document for the whole tree; 2: one per directory (repo/trees.py)

    @property
    def short_id(self) -> str:
        """The first 8 characters of the id (what the CLI shows)."""
        return self.id[:12]

    @property
    def data_time(self) -> datetime:
        """When the data it holds was read: its time, or the ``DATA_AS_OF`` label when
        earlier (a label that does not parse counts for nothing)."""
        try:
            as_of = datetime.fromisoformat(self.labels[DATA_AS_OF])
        except (KeyError, ValueError):
            return self.time
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=self.time.tzinfo)
        return min(self.time, as_of)


@dataclass
class RefInfo:
    """A named stream outside snapshots (e.g. one WAL segment), stored once, never replaced."""

    namespace: str
    name: str
    size: int
    digest: str  # keyed hash of the whole content: equal content <=> equal digest
    chunks: list[str]
    time: datetime
    labels: dict[str, str] = field(default_factory=dict)
    # not stored: what a push found squatting this name (it then stored the ref side by side)
    squatters: list[str] = field(default_factory=list)
    # False: sealed by another writer, so size, chunks and labels are unknown here (empty)
    opened: bool = True


@dataclass
class Problem:
    """One finding of `check`: what is wrong and what it affects."""

    kind: str  # missing-chunk, corrupt-chunk, corrupt-pack, corrupt-index, corrupt-snapshot, ...
    object: str
    message: str
    snapshots: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    """What ``check`` examined and the problems it found."""

    snapshots: int = 0
    packs: int = 0
    chunks: int = 0
    bytes_read: int = 0
    packs_read: int = 0
    read_data: bool = False
    subset: str | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # not failures (an unsigned legacy repository)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


@dataclass
class ForgetReport:
    """Which snapshots ``forget`` kept, removed, or could not remove (locked)."""

    kept: list[SnapshotInfo] = field(default_factory=list)
    removed: list[SnapshotInfo] = field(default_factory=list)
    locked: list[SnapshotInfo] = field(default_factory=list)  # would go, but Object Lock keeps it
    reasons: dict[str, list[str]] = field(default_factory=dict)  # snapshot id -> why kept


@dataclass
class PruneReport:
    """What ``prune`` deleted or kept, and the bytes it freed."""

    packs_removed: int = 0
    bytes_removed: int = 0
    packs_kept_locked: int = 0
    packs_total: int = 0
    unreferenced_chunks: int = 0
    incomplete_removed: int = 0  # temp files of killed writers
    locked_objects: list[str] = field(default_factory=list)
    packs_repacked: int = 0  # small or mostly unused packs whose live blobs were rewritten
    bytes_repacked: int = 0  # bytes of the new packs written for them
    repack_kept_locked: list[str] = field(default_factory=list)  # would be repacked: under retention


@dataclass
class References:
    """blob id -> the (snapshot short id, path) pairs that use it; or, without
    ``record_users`` (prune), only which blobs are used, held as raw ids."""

    users: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    record_users: bool = True
    users_of: Container[str] | None = None  # recording users: only of these blobs
    # every used blob id when not recording users: a million used chunks took ~250 MB as
    # (snapshot, path) lists keyed by hex strings, ~34 MB here
    used: IdTable = field(default_factory=IdTable)
    snapshots: list[SnapshotInfo] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    complete: bool = True  # False when some tree could not be read (prune must not delete then)
    # snapshots of key material whose trees only the custodians' escrow shares open: their
    # chunks are unknown, so prune keeps every escrowed pack
    escrowed: list[str] = field(default_factory=list)
    # used "ids" that are none (when not recording users), each once: a set in listing order,
    # since a forged ref may list any number of them
    invalid: dict[str, None] = field(default_factory=dict)

    def add(self, blob_id: str, snapshot: str, path: str) -> None:
        """Notes that ``path`` of ``snapshot`` uses the blob."""
        if self.record_users:
            if self.users_of is None or blob_id in self.users_of:
                self.users.setdefault(blob_id, []).append((snapshot, path))
            return
        try:
            self.used.add(blob_id)
        except (ValueError, TypeError):  # not a blob id at all (a forged ref or shard
            # entry, a null in its chunk list): it names no stored blob, and check reports
            # a string as a chunk no index lists, as it did when users were recorded
            if isinstance(blob_id, str):
                self.invalid[blob_id] = None
