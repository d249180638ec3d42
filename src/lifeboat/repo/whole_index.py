"""The whole loaded index kept in the local cache, laid out as it is in memory.

Loading a million-blob index decodes every cached index file and places each blob in its
table: ~2 s, a tenth of an unchanged backup of a million files. The table as it is laid
out (idtable.py ``dump``), with the index's pack numbering and the judgement inputs of the
index files it was built from, is read back in tens of milliseconds.

It stands for exactly those index files (repo/index.py ``load_index``): it is used only
while every one of them is still listed, each judged afresh against the writer registry
as a file read from the cache is, and only files listed since are read one by one. A
consolidation or prune replaces index files, and with them the whole: it is built again.
Like every local cache file it is tagged under a key only key holders derive
(repo/local_cache.py), over all its bytes as they are read: one rewritten by somebody
without a key is ignored, and the index is loaded file by file.

Stored form: ``MAGIC ‖ u64 length ‖ JSON ‖ tag ‖ table ‖ tag``, each tag over every byte
before it, under the index cache's form (``CACHE_FORM``, index.py): a copy kept by a version
whose checks of index entries were others is not used. The meta's tag is checked before the
meta is used, and bounds what the table may claim before anything of that size is made.
"""

from __future__ import annotations

import hmac
import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from lifeboat.errors import ConfigError
from lifeboat.private import private_dir, replacing_private
from lifeboat.repo.idtable import IdTable
from lifeboat.repo.local_cache import TAG_SIZE, CacheSeal

NAME = "whole-index"  # beside the index files' copies (named index_<id>)
MAGIC = b"lifeboat-whole-index-1\n"
_LENGTH = struct.Struct("<Q")
KEEP_FROM = 10_000  # blobs: a smaller index loads file by file in a few milliseconds
REWRITE_SHARE = 16  # written again once the files read after it list 1/16 of its blobs
META_MAX = 64 << 20  # the meta of a repository of many thousand index files is a few MB


@dataclass
class WholeIndex:
    """A kept index: its layout (``Index.layout``: pack numbering, tree ends, and per index
    file its packs, blob count and judgement inputs) and its blob table."""

    meta: dict[str, Any]
    table: IdTable


def read_whole(
    directory: Path, seal: CacheSeal, form: str, usable: Callable[[dict[str, Any]], bool], value_size: int
) -> WholeIndex | None:
    """The kept index, when its tags hold and ``usable(meta)`` (asked once the meta's own
    tag held, before the table is read); None otherwise: missing, damaged, rewritten, kept
    by a version whose checks were others (``form``: the index cache's), or no longer
    standing for the listed files. It is only a cache: nothing in it can fail a load."""
    try:
        with open(directory / NAME, "rb") as stored:
            return _read(stored, seal.tagger(form + NAME), usable, value_size)
    except Exception:  # whatever it holds, the index is then read file by file
        return None


def _read(
    stored: io.BufferedReader, tag: Any, usable: Callable[[dict[str, Any]], bool], value_size: int
) -> WholeIndex | None:
    left = [os.fstat(stored.fileno()).st_size - 2 * TAG_SIZE]

    def read(n: int) -> bytearray:
        if not 0 <= n <= left[0]:
            raise ValueError("a whole index that claims more than it holds")
        piece = bytearray(n)
        if stored.readinto(piece) != n:
            raise ValueError("a short whole index")
        left[0] -= n
        tag.update(piece)
        return piece

    if read(len(MAGIC)) != MAGIC:
        return None
    (length,) = _LENGTH.unpack(read(_LENGTH.size))
    if length > META_MAX:
        return None
    encoded = read(length)
    if not hmac.compare_digest(stored.read(TAG_SIZE), tag.digest()):
        return None  # the meta rewritten without the key: not even looked at
    meta = orjson.loads(encoded)
    if not isinstance(meta, dict) or not usable(meta):
        return None
    most = sum(int(kept["blobs"]) for kept in meta["files"].values())  # authenticated bounds
    table = IdTable.load(value_size, read, most)
    if not hmac.compare_digest(stored.read(TAG_SIZE + 1), tag.digest()):
        return None  # the table rewritten without the key, or cut short
    return WholeIndex(meta, table)


def keep_whole(directory: Path, seal: CacheSeal, form: str, whole: WholeIndex) -> bool:
    """Keeps the index (best effort: a state dir this user may not write only costs the
    next load its time); whether it was kept."""
    tag = seal.tagger(form + NAME)
    encoded = orjson.dumps(whole.meta)
    if len(encoded) > META_MAX:
        return False  # read_whole would refuse it: not kept, so no load reads it back in vain
    try:
        private_dir(directory)
        with replacing_private(directory / NAME) as out:

            def write(piece: bytes | bytearray) -> None:
                tag.update(piece)
                out.write(piece)

            write(MAGIC)
            write(_LENGTH.pack(len(encoded)))
            write(encoded)
            out.write(tag.digest())  # the meta's own tag, checked before it is used
            whole.table.dump(write)
            out.write(tag.digest())
    except (OSError, ConfigError):  # a read-only state dir: private_dir says ConfigError
        return False
    return True
