"""A pack's blob table (its trailer) is sealed for its writer and the recovery side: both
read it, another writer and the storage provider do not, a table moved onto another pack
does not open, and a pack written before sealed tables (plaintext table) is still read."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from lifeboat.errors import IntegrityError
from lifeboat.repo import Repository
from lifeboat.repo.format import PACK_TRAILER_MAGIC, trailer_is_sealed
from lifeboat.services.keys import issue_writer_key
from lifeboat.storage import open_storage


def _site(tmp_path: Path) -> tuple[Repository, Repository, Repository, list[bytes]]:
    """(the writer, the recovery side, another writer, the bytes of the writer's packs)."""
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    writer, _, recovery = Repository.create(storage)
    for data in (b"first file\n" * 50, b"second file\n" * 70):
        with writer.backup("app", "files") as session:
            session.add_bytes("app/f", data)
            session.commit()
    reader = Repository.open(storage, recovery_key=recovery)
    other_key, _, _ = issue_writer_key(reader, "host-b", ["web"])
    other = Repository.open(storage, backup_key=other_key)
    packs = [storage.get(obj.name) for obj in storage.list("data/")]
    return writer, reader, other, packs


def test_the_writer_and_the_recovery_side_read_a_table_another_writer_does_not(tmp_path: Path) -> None:
    writer, reader, other, packs = _site(tmp_path)
    assert len(packs) >= 2 and all(trailer_is_sealed(p) for p in packs)
    tables = [reader.pack_table(p) for p in packs]
    assert all(tables) and all(btype in ("data", "tree") for t in tables for _, btype, *_ in t)
    assert [writer.pack_table(p) for p in packs] == tables
    for pack in packs:
        with pytest.raises(IntegrityError, match="does not open with this key"):
            other.pack_table(pack)


def test_a_table_moved_onto_another_pack_does_not_open(tmp_path: Path) -> None:
    writer, reader, _, packs = _site(tmp_path)
    first, second = packs[:2]
    (first_len,) = struct.unpack(">I", first[-8:-4])
    (second_len,) = struct.unpack(">I", second[-8:-4])
    grafted = second[: -8 - second_len] + first[-8 - first_len :]
    with pytest.raises(IntegrityError, match="cannot be opened"):
        reader.pack_table(grafted)
    with pytest.raises(IntegrityError, match="does not open"):
        writer.pack_table(grafted)


def test_a_plaintext_table_of_an_older_pack_is_still_read(tmp_path: Path) -> None:
    _, reader, other, packs = _site(tmp_path)
    pack = packs[0]
    table = reader.pack_table(pack)
    (length,) = struct.unpack(">I", pack[-8:-4])
    body = json.dumps({"blobs": [list(b) for b in table]}).encode()
    legacy = pack[: -8 - length] + body + struct.pack(">I", len(body)) + PACK_TRAILER_MAGIC
    assert not trailer_is_sealed(legacy)
    assert reader.pack_table(legacy) == table == other.pack_table(legacy)
