"""Sealed, signed snapshot headers and index files (repo/sealed.py): who opens what, the
earlier plaintext layout still read, and an object of an unknown layout refused in one line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lifeboat.crypto.signed import ObjectType
from lifeboat.errors import IntegrityError
from lifeboat.repo import Repository
from lifeboat.repo.format import INDEX_MAGIC, SNAPSHOT_MAGIC, encode_framed
from lifeboat.repo.sealed import MetadataCodec, Unopened
from lifeboat.storage import open_storage


def _repo(tmp_path: Path) -> tuple[Repository, Repository]:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    writer, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    with writer.backup("app", "files") as session:
        session.add_bytes("secret-name.txt", b"hello\n")
        session.commit()
    reader = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "cache-r")
    return writer, reader


def test_the_writer_and_the_recovery_side_read_a_header_that_names_nothing_in_storage(tmp_path: Path) -> None:
    writer, reader = _repo(tmp_path)
    [mine] = writer.snapshots("app")
    [same] = reader.snapshots("app")
    assert mine.id == same.id and mine.tree == same.tree
    raw = (tmp_path / "repo" / "snapshots" / mine.id).read_bytes()
    assert raw[:4] == b"LBMD" and b"app" not in raw and hashlib.sha256(raw[:-101]).hexdigest() == mine.id


def test_another_key_cannot_open_it_and_a_moved_trailer_does_not_open(tmp_path: Path) -> None:
    writer, reader = _repo(tmp_path)
    [snap] = writer.snapshots()
    raw = (tmp_path / "repo" / "snapshots" / snap.id).read_bytes()
    other = MetadataCodec(
        writer.id, writer.keyring.mac, signing=reader.signing, recovery_public=writer.keyring.recipient_public
    )
    opened = other.decode(
        ObjectType.SNAPSHOT, "snapshots/", SNAPSHOT_MAGIC, snap.id, raw, lambda p: None, "s"
    )
    assert isinstance(opened, Unopened) and opened.signer == writer.metadata.public
    # the root key re-signs the writer's ciphertext as its own: the AAD names the writer
    trailer = other.encode(ObjectType.SNAPSHOT, "snapshots/", SNAPSHOT_MAGIC, {}, "app")[1][-101:]
    with pytest.raises(IntegrityError, match="does not open"):
        reader.metadata.decode(
            ObjectType.SNAPSHOT,
            "snapshots/",
            SNAPSHOT_MAGIC,
            snap.id,
            raw[:-101] + trailer,
            lambda p: "app",
            "s",
        )


def test_the_earlier_plaintext_layout_is_read_and_an_unknown_one_refused_in_one_line(tmp_path: Path) -> None:
    writer, _ = _repo(tmp_path)
    plain = encode_framed(INDEX_MAGIC, {"version": 1, "packs": []}, writer.keyring.mac)
    legacy = MetadataCodec(
        writer.id,
        writer.keyring.mac,
        signing=None,
        recovery_public=writer.keyring.recipient_public,
        seal=False,
    )
    index_id = hashlib.sha256(plain).hexdigest()
    opened = legacy.decode(ObjectType.INDEX, "index/", INDEX_MAGIC, index_id, plain, lambda p: None, "i")
    assert not isinstance(opened, Unopened) and opened.payload["packs"] == [] and not opened.sealed
    unknown = b"LBZZ\x07" + bytes(600)
    unknown_id = hashlib.sha256(unknown).hexdigest()
    (tmp_path / "repo" / "snapshots" / unknown_id).write_bytes(unknown)
    listing = writer.snapshot_listing()
    [problem] = listing.damaged.values()
    assert "layout this lifeboat cannot read" in problem and "\n" not in problem
    assert [s.asset for s in listing.accepted] == ["app"]
