"""A pack's blob table (its trailer) is sealed with the pack's own data key: the recovery
side reads it, a backup key does not, a table moved from another pack does not open, and a
pack written before sealed tables (plaintext table) is still read."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from lifeboat.errors import IntegrityError, KeyError_
from lifeboat.repo import Repository
from lifeboat.repo.format import PACK_TRAILER_MAGIC, trailer_is_sealed
from lifeboat.storage import open_storage


def _two_packs(tmp_path: Path) -> tuple[Repository, Repository, list[bytes]]:
    """(backup-key handle, recovery handle, the bytes of two packs of one blob each)."""
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, _, recovery = Repository.create(storage)
    for data in (b"first file\n" * 50, b"second file\n" * 70):
        with repo.backup("app", "files") as session:
            session.add_bytes("app/f", data)
            session.commit()
    packs = [storage.get(obj.name) for obj in storage.list("data/")]
    return repo, Repository.open(storage, recovery_key=recovery), packs


def test_only_the_recovery_side_reads_which_blobs_a_pack_holds(tmp_path: Path) -> None:
    writer, reader, packs = _two_packs(tmp_path)
    assert packs and all(trailer_is_sealed(p) for p in packs)
    tables = [reader.pack_table(p) for p in packs]
    assert all(tables) and all(btype in ("data", "tree") for t in tables for _, btype, *_ in t)
    with pytest.raises(KeyError_, match="needs the recovery key"):
        writer.pack_table(packs[0])


def test_a_table_moved_onto_another_pack_does_not_open(tmp_path: Path) -> None:
    _, reader, packs = _two_packs(tmp_path)
    first, second = packs[:2]
    (first_len,) = struct.unpack(">I", first[-8:-4])
    (second_len,) = struct.unpack(">I", second[-8:-4])
    grafted = second[: -8 - second_len] + first[-8 - first_len :]
    with pytest.raises(IntegrityError, match="authentication failed"):
        reader.pack_table(grafted)


def test_a_plaintext_table_of_an_older_pack_is_still_read(tmp_path: Path) -> None:
    _, reader, packs = _two_packs(tmp_path)
    pack = packs[0]
    table = reader.pack_table(pack)
    (length,) = struct.unpack(">I", pack[-8:-4])
    body = json.dumps({"blobs": [list(b) for b in table]}).encode()
    legacy = pack[: -8 - length] + body + struct.pack(">I", len(body)) + PACK_TRAILER_MAGIC
    assert not trailer_is_sealed(legacy)
    assert reader.pack_table(legacy) == table
