"""Snapshot trees in two formats, read and written one directory at a time where they can be.

Format 1 (``tree_format`` absent from the header): the header's ``tree`` ids are the pieces
of one document ``{"entries": [...]}`` holding every entry of the snapshot, sorted by path.
Reading it means holding all of it.

Format 2: one document per directory, ``{"entries": [...]}`` with the directory's direct
children only; a directory's entry names its own document's blob ids in ``subtree``, and the
header's ``tree`` ids are the top-level document (the roots). Entries keep their full path,
so a document is the same wherever it is read from. A backup writes a directory's document
as soon as the walk leaves it, and a reader holds one document per level of the path it is
in: memory follows the depth and the widest directory, not the number of files. Unchanged
directories give byte-identical documents, stored once across snapshots.
(docs/design/repository-format.md, "Trees")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any

import orjson

from lifeboat.errors import IntegrityError
from lifeboat.repo.format import object_ids_valid
from lifeboat.repo.model import Entry

TREE_FORMAT_SINGLE = 1
TREE_FORMAT_PER_DIRECTORY = 2
TREE_FORMATS = (TREE_FORMAT_SINGLE, TREE_FORMAT_PER_DIRECTORY)
MAX_DEPTH = 4096  # deeper than any filesystem allows: a tree deeper than this is damaged


def encoded_entry(entry: Entry) -> bytes:
    """An entry's JSON in bytes of its own length. orjson leaves its output in the buffer
    it wrote it into, 4 KiB at least (measured: 4,098 bytes held for an entry of 108), and
    entries are held until their document is stored: a directory's (100,000 new files in
    one directory held 410 MB, now 22 MB), a bucket's (until the commit)."""
    return memoryview(orjson.dumps(entry.to_json())).tobytes()


def document_pieces(
    entries: Iterable[bytes], size: int, head: bytes = b'{"entries":[', tail: bytes = b"]}"
) -> Iterator[bytes]:
    """``head + b",".join(entries) + tail`` (what orjson makes of the document ``{"entries":
    [...]}``) in pieces of ``size`` bytes, the last one at most that and none empty, without
    joining the whole: the tree's blobs, cut where cutting the whole document cuts it.
    A document that fits in one piece (most directories') is joined at once."""
    if size < 1:
        raise ValueError(f"a tree blob of {size} bytes")
    if isinstance(entries, list):
        total = len(head) + sum(map(len, entries)) + max(len(entries) - 1, 0) + len(tail)
        if total <= size:
            if total:
                yield head + b",".join(entries) + tail
            return
    buffer = bytearray(head)
    for i, entry in enumerate(entries):
        if i:
            buffer += b","
        buffer += entry
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    buffer += tail
    while len(buffer) > size:
        yield bytes(buffer[:size])
        del buffer[:size]
    if buffer:
        yield bytes(buffer)


class TreeStream:
    """Takes a snapshot's entries in walk order (each directory before what it holds, its
    whole content before its next sibling) and stores each directory's document when the
    walk leaves it. ``store`` stores one tree blob and returns its id."""

    def __init__(self, store: Callable[[bytes], str], chunk_size: int) -> None:
        self._store = store
        self._chunk_size = chunk_size
        self._root: list[bytes] = []
        self._open: list[tuple[str, Entry, list[bytes]]] = []  # (path + "/", entry, children)
        self.blobs: list[str] = []  # every tree blob written (one or a few per directory)

    def add(self, entry: Entry) -> bytes:
        """Adds one entry; returns its encoded form (a directory's, without its subtree)."""
        encoded = encoded_entry(entry)
        if entry.type == "dir":
            self._close_before(entry.path)
            self._open.append((entry.path + "/", entry, []))
        else:
            self.add_encoded(entry.path, encoded)
        return encoded

    def add_encoded(self, path: str, encoded: bytes) -> None:
        """Adds a file's or link's entry already encoded (an unchanged file's, as the
        parent's tree holds it: decoding and encoding it again cost more than the walk)."""
        self._close_before(path)
        self._children().append(encoded)

    def _close_before(self, path: str) -> None:
        """Closes the open directories ``path`` is not inside."""
        while self._open and not path.startswith(self._open[-1][0]):
            self._close()

    def finish(self) -> list[str]:
        """Closes every open directory and stores the top level; returns its blob ids."""
        while self._open:
            self._close()
        ids = self._store_document(self._root)
        self._root = []
        return ids

    def _children(self) -> list[bytes]:
        return self._open[-1][2] if self._open else self._root

    def _close(self) -> None:
        _, entry, children = self._open.pop()
        entry.subtree = self._store_document(children)
        self._children().append(encoded_entry(entry))

    def _store_document(self, children: list[bytes]) -> list[str]:
        ids = [self._store(piece) for piece in document_pieces(children, self._chunk_size)]
        self.blobs.extend(ids)
        return ids


def decode_document(raw: bytes, what: str) -> list[Entry]:
    """The entries of one stored tree document, every id checked."""
    try:
        entries = [Entry(**e) for e in orjson.loads(raw)["entries"]]  # Entry.from_json, inlined
    except (ValueError, KeyError, TypeError, AttributeError):
        raise IntegrityError(f"tree of {what} is damaged") from None
    # every id of the document checked at once (one regex over them all): a directory of
    # small files has as many chunk ids as files, and one check per id was a tenth of a restore
    if not all(type(e.chunks) is list for e in entries) or not object_ids_valid(
        list(chain.from_iterable(e.chunks for e in entries))
    ):
        raise IntegrityError(f"tree of {what} has malformed chunk ids")
    if not all(type(e.subtree) is list for e in entries) or not object_ids_valid(
        list(chain.from_iterable(e.subtree for e in entries))
    ):
        raise IntegrityError(f"tree of {what} has malformed subtree ids")
    for e in entries:
        if e.subtree and e.type != "dir":
            raise IntegrityError(f"tree of {what} gives a subtree to the {e.type} {e.path!r}")
    return entries


_ENTRY_KEYS = frozenset(Entry.__dataclass_fields__)


def decode_file_entry(encoded: bytes, path: str) -> tuple[list[str], int, Any] | None:
    """(chunks, size, meta) of one encoded entry when ``decode_document`` would accept it as
    the regular file ``path`` with an integer size; None otherwise. ``meta`` is as stored
    (any JSON: ``null`` too). An unchanged backup asks once per file: building the Entry
    and checking its columns one file at a time cost more than the walk's stat of the file."""
    try:
        data = orjson.loads(encoded)
    except ValueError:
        return None
    if type(data) is not dict or not data.keys() <= _ENTRY_KEYS:
        return None
    chunks = data.get("chunks", [])
    size = data.get("size", 0)
    meta = data.get("meta", {})
    if (
        data.get("path") != path
        or data.get("type", "file") != "file"
        or type(size) is not int
        or type(chunks) is not list
        or not object_ids_valid(chunks)
        or data.get("subtree", []) != []  # decode_document refuses a file's subtree
    ):
        return None
    return chunks, size, meta


def iter_tree(
    read_blob: Callable[[str], bytes], root: list[str], tree_format: int, what: str
) -> Iterator[Entry]:
    """Every entry of a tree, each directory before its content (format 2: one document per
    level held at a time; format 1: the whole tree, as it is one document)."""
    if tree_format not in TREE_FORMATS:
        raise IntegrityError(f"{what} has tree format {tree_format}, which this version cannot read")

    def document(ids: list[str]) -> list[Entry]:
        return decode_document(b"".join(read_blob(blob_id) for blob_id in ids), what)

    if tree_format == TREE_FORMAT_SINGLE:
        entries = document(root)
        if any(e.subtree for e in entries):
            raise IntegrityError(f"tree of {what} is damaged (a subtree in a single-document tree)")
        yield from entries
        return
    stack: list[Iterator[Entry]] = [iter(document(root))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        yield entry
        if entry.subtree:
            if len(stack) >= MAX_DEPTH:
                raise IntegrityError(f"tree of {what} is damaged (nested deeper than {MAX_DEPTH})")
            stack.append(iter(document(entry.subtree)))
