"""The whole loaded index kept in the local cache, laid out as it is in memory.

Loading a million-blob index decodes every cached index file and places each blob in its
table: ~2 s, a tenth of an unchanged backup of a million files. The table as it is laid
out (idtable.py ``dump``), with the index's pack numbering and the judgement inputs of the
index files it was built from, is read back in tens of milliseconds.

It stands for exactly those index files (index/index.py ``load_index``): it is used only
while every one of them is still listed, each judged afresh against the writer registry
as a file read from the cache is, and only files listed since are read one by one. A
consolidation or prune replaces index files, and with them the whole: it is built again.
Like every local cache file it is tagged under a key only key holders derive
(repo/local_cache.py), over all its bytes as they are read: one rewritten by somebody
without a key is ignored, and the index is loaded file by file.

Stored form: ``MAGIC ‖ u64 length ‖ JSON ‖ table ‖ tag``.
"""

from __future__ import annotations

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


@dataclass
class WholeIndex:
    """A kept index: its layout (``Index.layout``: pack numbering, tree ends, and per index
    file its packs, blob count and judgement inputs) and its blob table."""

    meta: dict[str, Any]
    table: IdTable


def read_whole(
    directory: Path, seal: CacheSeal, usable: Callable[[dict[str, Any]], bool], value_size: int
) -> WholeIndex | None:
    """The kept index, when its tag holds and ``usable(meta)`` (asked before the table is
    read); None otherwise: missing, damaged, rewritten, or no longer standing for the
    listed files."""
    try:
        with open(directory / NAME, "rb") as stored:
            return _read(stored, seal, usable, value_size)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _read(
    stored: io.BufferedReader, seal: CacheSeal, usable: Callable[[dict[str, Any]], bool], value_size: int
) -> WholeIndex | None:
    tag = seal.tagger(NAME)
    left = [os.fstat(stored.fileno()).st_size - TAG_SIZE]

    def read(n: int) -> bytearray:
        if not 0 <= n <= left[0]:  # lengths are checked by the tag only at the end
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
    meta = orjson.loads(read(length))
    if not isinstance(meta, dict) or not usable(meta):
        return None
    table = IdTable.load(value_size, read)
    if stored.read(TAG_SIZE + 1) != tag.digest():
        return None  # rewritten without the key, or cut short: every byte above is dropped
    return WholeIndex(meta, table)


def keep_whole(directory: Path, seal: CacheSeal, whole: WholeIndex) -> None:
    """Keeps the index (best effort: a state dir this user may not write only costs the
    next load its time)."""
    tag = seal.tagger(NAME)
    try:
        private_dir(directory)
        with replacing_private(directory / NAME) as out:

            def write(piece: bytes | bytearray) -> None:
                tag.update(piece)
                out.write(piece)

            encoded = orjson.dumps(whole.meta)
            write(MAGIC)
            write(_LENGTH.pack(len(encoded)))
            write(encoded)
            whole.table.dump(write)
            out.write(tag.digest())
    except (OSError, ConfigError):  # a read-only state dir: private_dir says ConfigError
        pass
