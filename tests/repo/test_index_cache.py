"""The local copy of decoded index files (repo/index.py ``IndexCache``): a copy this version
tagged is used without checking its entries again; one an earlier version tagged, or one
somebody rewrote without the key, is read from the repository and checked once more."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from lifeboat.assets.files.tree import backup_paths
from lifeboat.repo import Repository
from lifeboat.repo.index import CACHE_FORM, IndexCache
from lifeboat.repo.local_cache import TAG_SIZE
from lifeboat.storage import open_storage


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    opened = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "cache")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i}").write_bytes(f"file {i}\n".encode() * (i + 1))
    backup_paths(opened, "config", [src])
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
        body = orjson.loads(raw[:-TAG_SIZE])
        body["packs"] = []
        path.write_bytes(orjson.dumps(body) + raw[-TAG_SIZE:])  # the old tag kept: it no longer holds

    assert sorted(repo.index(refresh=True).packs()) == expected
