"""The repository's public data types: tree entries, snapshots, named refs, reports."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

EntryType = Literal["file", "dir", "symlink"]


@dataclass
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

    def to_json(self) -> dict[str, Any]:
        # Hand-written, not dataclasses.asdict: this runs for every file of every snapshot,
        # and asdict's recursive deep copy was a quarter of a many-small-files backup.
        data: dict[str, Any] = {"path": self.path, "type": self.type}
        for name in _ENTRY_FIELDS:
            value = getattr(self, name)
            if value not in (None, "", [], {}):
                data[name] = value.copy() if isinstance(value, list | dict) else value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        return cls(**data)


_ENTRY_FIELDS = tuple(f.name for f in fields(Entry) if f.name not in ("path", "type"))


@dataclass
class SnapshotStats:
    files: int = 0
    dirs: int = 0
    bytes: int = 0  # logical bytes of all files
    new_bytes: int = 0  # logical bytes of chunks that were not in the repository yet
    stored_bytes: int = 0  # bytes written to storage for new chunks (compressed+encrypted)
    chunks: int = 0
    new_chunks: int = 0
    reused_files: int = 0  # files taken from the parent without reading them
    seconds: float = 0.0


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

    @property
    def short_id(self) -> str:
        return self.id[:12]


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
    snapshots: int = 0
    packs: int = 0
    chunks: int = 0
    bytes_read: int = 0
    packs_read: int = 0
    read_data: bool = False
    subset: str | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class ForgetReport:
    kept: list[SnapshotInfo] = field(default_factory=list)
    removed: list[SnapshotInfo] = field(default_factory=list)
    locked: list[SnapshotInfo] = field(default_factory=list)  # would go, but Object Lock keeps it
    reasons: dict[str, list[str]] = field(default_factory=dict)  # snapshot id -> why kept


@dataclass
class PruneReport:
    packs_removed: int = 0
    bytes_removed: int = 0
    packs_kept_locked: int = 0
    packs_total: int = 0
    unreferenced_chunks: int = 0
    incomplete_removed: int = 0  # temp files of killed writers
    locked_objects: list[str] = field(default_factory=list)
