"""The local copy of decoded index files (repo/index.py ``IndexCache``): a copy this version
tagged is used without checking its entries again; one an earlier version tagged, or one
somebody rewrote without the key, is read from the repository and checked once more. A
writer keeps a copy of each index file it stores, the same as reading it back would give,
and ``check`` still reads the stored files for damage."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from lifeboat.assets.files.tree import backup_paths
from lifeboat.repo import Repository
from lifeboat.repo import index as index_module
from lifeboat.repo.format import index_name
from lifeboat.repo.index import CACHE_FORM, IndexCache, PackedEntries, decode_index, write_index
from lifeboat.repo.local_cache import TAG_SIZE
from lifeboat.repo.sealed import MetadataCodec
from lifeboat.storage import open_storage
from tests.harness.counting import CountingIndexReads
from tests.harness.trees import thirty_files


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    opened = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "cache")
    backup_paths(opened, "config", [thirty_files(tmp_path)])
    return opened


def cached_files(repo: Repository) -> list[Path]:
    assert repo.cache_dir is not None
    return sorted((repo.cache_dir / "index").iterdir())


def index_names(repo: Repository) -> list[str]:
    return sorted(obj.name for obj in repo.storage.list("index/"))


def test_a_copy_tagged_by_this_version_is_used_and_one_tagged_before_is_read_again(repo: Repository) -> None:
    expected = sorted(repo.index(refresh=True).packs())
    assert cached_files(repo)
    cache = IndexCache(repo.cache_dir / "index" if repo.cache_dir else None, repo.cache_seal)
    for name in index_names(repo):
        assert cache.get(name) is not None  # tagged under CACHE_FORM: taken as checked

    # What an earlier version left: the same entries, tagged under the plain name. They
    # are not taken as checked: a version that checks more must look at them again.
    for name, path in zip(index_names(repo), cached_files(repo), strict=True):
        data = repo.cache_seal.open(CACHE_FORM + name, path.read_bytes())
        assert data is not None
        path.write_bytes(repo.cache_seal.seal(name, data))
        assert cache.get(name) is None

    assert sorted(repo.index(refresh=True).packs()) == expected  # read from the repository
    for name in index_names(repo):
        assert cache.get(name) is not None  # and cached again, in this version's form


def test_a_copy_rewritten_without_the_key_is_not_used(repo: Repository) -> None:
    """An insider with the state dir (not the key file) empties a cached copy's pack list:
    a backup trusting it would store every chunk again as if new, or a restore miss them."""
    expected = sorted(repo.index(refresh=True).packs())
    for path in cached_files(repo):
        raw = path.read_bytes()
        _, judged = PackedEntries.from_cached(raw[:-TAG_SIZE])
        emptied = PackedEntries([], b"").cached(judged)
        path.write_bytes(emptied + raw[-TAG_SIZE:])  # the old tag kept: it no longer holds

    assert sorted(repo.index(refresh=True).packs()) == expected


def _entries(rng: random.Random, packs: int) -> list[dict[str, Any]]:
    """Well-formed entries: data and tree blobs, several per pack."""
    return [
        {
            "id": f"{rng.getrandbits(256):064x}",
            "blobs": [
                [f"{rng.getrandbits(256):064x}", rng.choice(["data", "tree"]), 7 + 100 * i, 1 + i, i]
                for i in range(rng.randint(1, 5))
            ],
        }
        for _ in range(packs)
    ]


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "legacy-plaintext"])
def test_an_index_file_written_here_is_kept_as_reading_it_back_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sealed: bool
) -> None:
    """The copy a writer keeps of what it stores (no read back) must be what a reader decodes
    from the stored bytes: the same entries, signature check, time and layout. A copy that
    said more or less would make this host's restores and backups see another index."""
    monkeypatch.setattr(index_module, "INDEX_FILE_BLOBS", 6)
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    writer, _, _ = Repository.create(storage, cache_dir=tmp_path / "cache")
    codec = writer.metadata
    if not sealed:
        codec = MetadataCodec(writer.id, writer.keyring.mac, signing=None, recovery_public=None, seal=False)
    packs = _entries(random.Random(7), 9)
    cache = IndexCache(tmp_path / "copies", writer.cache_seal)
    written = write_index(storage, packs, codec, cache)
    assert len(written) > 2  # several files
    listed: list[dict[str, Any]] = []
    for index_id in written:
        name = index_name(index_id)
        kept, read = cache.get(name), decode_index(storage.get(name), codec, name)
        assert kept is not None and kept == read
        assert kept.sealed is sealed and (kept.time is not None) is sealed
        listed += kept.entries.entries()
    assert listed == packs


def test_the_next_load_after_a_backup_reads_no_index_file_from_the_repository(tmp_path: Path) -> None:
    storage = CountingIndexReads(tmp_path / "repo")
    writer, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    backup_paths(writer, "config", [thirty_files(tmp_path)])
    stored = len(list(storage.list("index/")))
    assert stored and storage.index_reads == 0
    same_host = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "cache")
    blobs = len(same_host.index())
    assert storage.index_reads == 0  # every file from the copies its writer kept
    other_host = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "elsewhere")
    assert len(other_host.index()) == blobs and storage.index_reads == stored
