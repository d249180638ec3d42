"""What both kinds of objects source (a bucket, s3source.py; a directory, source.py)
describe an object with."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

DEFAULT_STALL_TIMEOUT = 60.0


@dataclass
class ObjectInfo:
    """One object (or version, or delete marker) of a source."""

    key: str
    size: int
    etag: str
    last_modified: datetime
    version_id: str | None = None
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    is_delete_marker: bool = False

    @property
    def identity(self) -> str:
        """What changes whenever the object's content would: key, version and etag."""
        return object_identity(self.key, self.version_id, self.etag, self.size)


def object_identity(key: str, version_id: str | None, etag: str, size: int) -> str:
    """An object's identity in the parent cache (``ObjectInfo.identity``)."""
    return f"{key}|{version_id or ''}|{etag}|{size}"


@dataclass(frozen=True)
class ObjectDir:
    """A subdirectory of a ``dir://`` source: the common prefix of the keys under it."""

    key: str
    mtime_ns: int
