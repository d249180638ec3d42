"""Object keys as paths inside a directory and back: a reversible mapping that no key
can use to escape the directory ('.', '..' and empty segments become %-tokens)."""

from __future__ import annotations

from pathlib import Path

SPECIAL_SEGMENTS = {"": "%00", ".": "%2E", "..": "%2E%2E"}
DECODE_SEGMENTS = {v: k for k, v in SPECIAL_SEGMENTS.items()}


def key_to_relpath(key: str) -> str:
    """An object key as a relative path that cannot escape the directory: '.', '..' and
    empty segments become %-tokens and '%' is escaped, so the mapping is reversible."""
    return "/".join(SPECIAL_SEGMENTS.get(seg) or seg.replace("%", "%25") for seg in key.split("/"))


def key_to_path(key: str) -> Path:
    """The relative path an object key is restored to in a directory."""
    return Path(key_to_relpath(key))


def relpath_to_key(rel: str) -> str:
    """The object key of a path inside a directory source."""
    return "/".join(
        DECODE_SEGMENTS[p] if p in DECODE_SEGMENTS else p.replace("%25", "%") for p in rel.split("/")
    )
