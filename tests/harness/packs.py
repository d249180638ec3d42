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


def damage_trees_of(repo: Repository, first_packs: set[str], repo_dir: Path) -> None:
    """Flips every byte of the tree blobs in the one tree pack of ``first_packs`` (the
    packs before a later backup that reused a directory's document from it), on disk
    under ``repo_dir`` (a file:// repository): that document is then unreadable."""
    index = repo.index(refresh=True)
    [old_trees] = [p for p in first_packs if index.tree_end(p)]
    stored = next((repo_dir / "data").rglob(old_trees))
    stored.chmod(0o600)
    data = bytearray(stored.read_bytes())
    for i in range(16, index.tree_end(old_trees)):
        data[i] ^= 0xFF
    stored.write_bytes(bytes(data))


def damage_chunk(repo: Repository, chunk_id: str, repo_dir: Path) -> str:
    """Flips one byte in the middle of a chunk's stored envelope, in its pack under
    ``repo_dir`` (a file:// repository); the pack's name, as errors give it."""
    from lifeboat.repo.format import pack_name

    victim = repo.index().get(chunk_id)
    assert victim is not None
    pack = repo_dir / pack_name(victim.pack)
    raw = bytearray(pack.read_bytes())
    raw[victim.offset + victim.length // 2] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(bytes(raw))
    return pack_name(victim.pack)
