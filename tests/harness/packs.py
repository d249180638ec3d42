"""Every stored pack's blob table, read as the recovery side reads it.

Pack trailers are sealed for their writer and the recovery side, so neither the storage
provider nor another backup host reads them. Tests that need the table (to
forge an index from it, to count stored chunks, to hand an attacker more than it has) open
it with the recovery key of the site they built."""

from __future__ import annotations

from pathlib import Path

from lifeboat.crypto.keys import load_recovery_key
from lifeboat.repo import Repository
from lifeboat.storage import open_storage

# (pack id, blob id, type, offset, length, raw length)
StoredBlob = tuple[str, str, str, int, int, int]


def stored_blob_table(repository: str, recovery_key: Path) -> list[StoredBlob]:
    """The blob table of every pack in ``repository`` (a storage URL)."""
    repo = Repository.open(open_storage(repository), recovery_key=load_recovery_key(recovery_key))
    table: list[StoredBlob] = []
    for obj in repo.storage.list("data/"):
        pack = obj.name.rsplit("/", 1)[-1]
        table += [(pack, *blob) for blob in repo.pack_table(repo.storage.get(obj.name))]
    return table
