"""Object keys as paths inside a directory and back: a mapping, one-to-one both ways, that
no key can use to escape the directory. The segments '.', '..' and '' become the tokens
'%2E', '%2E%2E' and '%00'; a segment that already looks like a token, or like an escaped
one, is escaped with one more '%25' in front. Every other segment is itself, '%' and all:
a media file named `50%off.jpg` is the key `50%off.jpg` and is restored under that name."""

from __future__ import annotations

import re
from pathlib import Path

SPECIAL_SEGMENTS = {"": "%00", ".": "%2E", "..": "%2E%2E"}
DECODE_SEGMENTS = {v: k for k, v in SPECIAL_SEGMENTS.items()}
ESCAPE = "%25"
# Snapshots of a dir:// source say which mapping named their keys; those without the label
# were walked under the first one, where every '%' of a name was escaped.
KEY_PATHS_LABEL = "key_paths"
KEY_PATHS_VERSION = "2"
TOKEN_LIKE = re.compile(r"(?:%25)*(?:%00|%2E|%2E%2E)")  # a token, with any number of escapes


def _encode(segment: str) -> str:
    token = SPECIAL_SEGMENTS.get(segment)
    if token is not None:
        return token
    return ESCAPE + segment if TOKEN_LIKE.fullmatch(segment) else segment


def _decode(part: str) -> str:
    special = DECODE_SEGMENTS.get(part)
    if special is not None:
        return special
    return part[len(ESCAPE) :] if TOKEN_LIKE.fullmatch(part) else part


def key_to_relpath(key: str) -> str:
    """An object key as a relative path that cannot escape the directory."""
    segments = key.split("/")
    if "%" not in key and "" not in segments and "." not in segments and ".." not in segments:
        return key  # nothing to encode: most keys (a restore maps every one)
    return "/".join(_encode(seg) for seg in segments)


def key_to_path(key: str) -> Path:
    """The relative path an object key is restored to in a directory."""
    return Path(key_to_relpath(key))


def relpath_to_key(rel: str) -> str:
    """The object key of a path inside a directory source (``key_to_relpath`` undone)."""
    if "%" not in rel:
        return rel  # no token, nothing escaped: most names (a walk maps every one)
    return "/".join(_decode(p) for p in rel.split("/"))


def key_of_legacy(key: str) -> str:
    """A key of a dir:// snapshot taken under the first mapping, as this mapping names the
    same file: the first mapping's path for it, read back (the file keeps its name)."""
    legacy_path = "/".join(SPECIAL_SEGMENTS.get(seg) or seg.replace("%", ESCAPE) for seg in key.split("/"))
    return relpath_to_key(legacy_path)
