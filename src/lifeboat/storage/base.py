"""The storage protocol: the only way repository bytes reach a disk or a bucket.

Rules every driver keeps (the conformance suite in tests/storage checks them):

* Names are relative ``/``-separated paths such as ``data/ab/abcdef...``; drivers map them
  to files or object keys under their root and never let a name escape that root.
* ``put`` is put-if-absent: when ``name`` exists it raises ``AlreadyExistsError`` and the
  existing object is untouched. Nothing is ever overwritten. A ``put`` either stores all
  bytes or nothing visible under ``name`` (files: write to a temp name, fsync, link; S3:
  one PUT with ``If-None-Match: *``).
* ``get`` returns the full object or the byte range ``[offset, offset+length)``; a missing
  object raises ``NotFoundError``.
* ``list`` yields every name under a prefix (recursively), in no guaranteed order.
* ``delete`` of a missing object is not an error. An object under retention (S3 Object
  Lock, or a read-only file inside its retention period) raises ``LockedError``.
* Every driver maps its own exceptions (OSError, botocore) to ``StorageError`` subclasses
  with a one-line message naming the object, never credentials.
* Methods may be called concurrently from several threads.

Drivers for versioned stores (S3 with versioning or Object Lock) also implement
``VersionedStorage``: every read of a name uses the first version ever written under it, so
an overwrite or a delete marker (by whoever holds write credentials) neither hides nor
replaces repository data; ``tampering()`` reports such names, and retention can be read and
extended (never shortened).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ObjectStat:
    name: str
    size: int
    mtime: float  # seconds since the epoch
    locked_until: float | None = None  # retention end, when the backend reports one


@runtime_checkable
class Storage(Protocol):
    """Where a repository's bytes live. See the module docstring for the rules."""

    url: str

    def put(self, name: str, data: bytes, *, retain: bool = True, sha256: str | None = None) -> None:
        """Store ``data`` under ``name`` if absent; raise AlreadyExistsError otherwise.

        ``retain=False`` skips the retention lock (Object Lock / read-only period) for
        short-lived objects such as repository locks, which must stay deletable.

        ``sha256``: the SHA-256 of ``data`` (hex) when the caller has it already (a pack's
        name is its SHA-256). A store that checks checksums is sent it and refuses bytes
        that do not match; a driver that keeps none ignores it.
        """

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Return the object's bytes, or a range of them."""

    def stat(self, name: str) -> ObjectStat:
        """Size and time of one object; NotFoundError when missing."""

    def exists(self, name: str) -> bool:
        """True when ``name`` exists."""

    def list(self, prefix: str = "") -> Iterator[ObjectStat]:
        """Every object whose name starts with ``prefix``."""

    def delete(self, name: str) -> None:
        """Remove ``name``; LockedError when retention protects it."""

    def sweep_incomplete(self, older_than: float) -> int:
        """Remove what writes killed midway left behind (never visible under a name),
        when older than ``older_than`` seconds; return how many were removed."""

    def close(self) -> None:
        """Release connections and pools."""


def write_times_trusted(storage: Storage) -> bool:
    """Whether ``ObjectStat.mtime`` is the store's own write time, which no writer can choose
    (S3 ``LastModified``), rather than a file time its writer may set (a local directory)."""
    return getattr(storage, "write_times_trusted", False) is True


def list_names(storage: Storage, prefix: str = "") -> Iterator[str]:
    """The names ``storage.list`` gives, from a driver's cheaper ``names`` where it has one
    (a local directory: no stat per regular file)."""
    names = getattr(storage, "names", None)
    if callable(names):
        return iter(names(prefix))
    return (obj.name for obj in storage.list(prefix))


def retention_slack(lock_days: int) -> timedelta:
    """How far past the retention it needs an object later snapshots reuse (packs,
    indexes) is locked, so most snapshots find what they reuse already covered: a quarter
    of lock_days, between an hour and a week (docs/design/repository-format.md)."""
    return min(timedelta(days=7), max(timedelta(hours=1), timedelta(days=lock_days) / 4))


@dataclass(frozen=True)
class Tampering:
    """A name whose first version is no longer the only one: later versions or delete markers."""

    name: str
    later_versions: int
    delete_markers: int

    def describe(self) -> str:
        parts = []
        if self.later_versions:
            parts.append(f"{self.later_versions} later version(s)")
        if self.delete_markers:
            parts.append(f"{self.delete_markers} delete marker(s)")
        return f"{self.name} was overwritten or deleted ({', '.join(parts)}); the first version is used"


@runtime_checkable
class VersionedStorage(Storage, Protocol):
    """A store that keeps every version and can lock them (see the module docstring)."""

    lock_days: int | None
    trust_endpoint: bool  # skip probe(): unsafe, for endpoints such as moto
    retention_requests: int  # PutObjectRetention calls made, for measurement

    def tampering(self, prefix: str = "") -> list[Tampering]:
        """Names under ``prefix`` with versions or delete markers after their first version."""

    def retention(self, name: str, *, fresh: bool = False) -> float | None:
        """When the retention of the pinned version ends (epoch seconds), or None.
        ``fresh`` asks the store instead of what this process last wrote or read."""

    def probe(self) -> list[str]:
        """What the endpoint fails to enforce (put-if-absent, Object Lock), as sentences."""

    def extend_retention(self, name: str, until: float) -> None:
        """Raise the retention of the pinned version to ``until`` (COMPLIANCE); never lowers it."""
