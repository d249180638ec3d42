"""Small source trees for tests that need a backup with a few index entries, the local
repository file-tree tests back them up into, and what a restore of one left on disk."""

from __future__ import annotations

from pathlib import Path

from lifeboat.repo import Repository
from lifeboat.storage import open_storage


def local_repository(root: Path) -> Repository:
    """A new repository in ``root/repo`` with 64 KiB chunks (a tree in many small blobs),
    opened with its recovery key and a cache in ``root/cache``."""
    storage = open_storage(f"file://{root / 'repo'}")
    _, _, recovery = Repository.create(storage, chunk_size=64 << 10)
    return Repository.open(storage, recovery_key=recovery, cache_dir=root / "cache")


def regular_files(target: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every regular file under ``target`` (links left out)."""
    found = [p for p in target.rglob("*") if p.is_file() and not p.is_symlink()]
    return {str(p.relative_to(target)): p.read_bytes() for p in found}


def thirty_files(tmp_path: Path) -> Path:
    """``tmp_path/src`` with 30 small files of distinct content (one pack, one index file)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i}").write_bytes(f"file {i}\n".encode() * (i + 1))
    return src
