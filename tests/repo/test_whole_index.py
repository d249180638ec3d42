"""The whole loaded index kept in the local cache (repo/whole_index.py): a later load reads
no index file it was built from and answers every lookup as a load file by file does; files
listed since are read one by one; a file refused since makes it unused. What an insider does
to it (a replay after a consolidation or prune, a rewrite without the key) is in
tests/attacks/test_whole_index_cache.py. Real repositories and backups; the size from which
it is kept is lowered here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeboat.assets.files.tree import backup_paths
from lifeboat.repo import Repository, index, whole_index
from lifeboat.repo.index import Index, IndexCache
from lifeboat.storage import open_storage


@pytest.fixture(autouse=True)
def kept_from_one_blob(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index, "KEEP_FROM", 1)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the index files each load reads (from the cache or the repository)."""
    names: list[str] = []
    real = index.read_index_file

    def counted(storage, codec, cache, trust, name, fetched=None):  # type: ignore[no-untyped-def]
        names.append(name)
        return real(storage, codec, cache, trust, name, fetched)

    monkeypatch.setattr(index, "read_index_file", counted)
    yield names


_RECOVERY: dict[Path, object] = {}  # each test's recovery key, by its tmp_path


def opened(tmp_path: Path) -> Repository:
    """A new handle on the test's repository (made on first use): a new process's load."""
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    if tmp_path not in _RECOVERY:
        _, _, _RECOVERY[tmp_path] = Repository.create(storage, cache_dir=tmp_path / "cache")
    return Repository.open(storage, recovery_key=_RECOVERY[tmp_path], cache_dir=tmp_path / "cache")  # type: ignore[arg-type]


def backed_up(repo: Repository, tmp_path: Path, n: int) -> None:
    """One more backup (one more index file) of 40 new small files."""
    src = tmp_path / f"src{n}"
    src.mkdir()
    for i in range(40):
        (src / f"f{i}").write_bytes(f"backup {n} file {i}\n".encode() * (i + 1))
    backup_paths(repo, f"app{n}", [src])


def answers(loaded: Index) -> dict[str, list[tuple[object, ...]]]:
    """Every lookup the index answers: each blob's locations, by pack."""
    return {
        pack: sorted(tuple(loc) for blob in blobs for loc in loaded.locations(blob))
        for pack, blobs in sorted(loaded.blobs_by_pack().items())
    }


def file_by_file(repo: Repository) -> Index:
    cache = IndexCache(None, repo.cache_seal)  # no cache dir: every file read and decoded
    return index.load_index(repo.storage, repo.metadata, cache, repo.trust())


def kept_and_used(tmp_path: Path, reads: list[str]) -> None:
    """Loads the index (kept), then again: that load reads no index file (the kept one is in use)."""
    opened(tmp_path).index()
    reads.clear()
    opened(tmp_path).index()
    assert reads == []


def kept_path(repo: Repository) -> Path:
    assert repo.cache_dir is not None
    return repo.cache_dir / "index" / whole_index.NAME


def test_a_second_load_reads_no_index_file_and_answers_as_a_load_file_by_file(
    tmp_path: Path, reads: list[str]
) -> None:
    repo = opened(tmp_path)
    for n in range(3):
        backed_up(repo, tmp_path, n)
    opened(tmp_path).index()  # loaded file by file, then kept
    assert kept_path(repo).exists()
    reads.clear()

    loaded = opened(tmp_path).index()

    assert reads == []
    assert answers(loaded) == answers(file_by_file(repo))
    assert loaded.files == file_by_file(repo).files and loaded.file_blobs == file_by_file(repo).file_blobs
    assert len(loaded) > 100


def test_files_listed_after_it_are_read_one_by_one(tmp_path: Path, reads: list[str]) -> None:
    repo = opened(tmp_path)
    backed_up(repo, tmp_path, 0)
    opened(tmp_path).index()
    before = {o.name for o in repo.storage.list("index/")}
    backed_up(repo, tmp_path, 1)
    reads.clear()

    loaded = opened(tmp_path).index()

    assert set(reads) == {o.name for o in repo.storage.list("index/")} - before
    assert answers(loaded) == answers(file_by_file(repo))


def test_a_file_now_refused_makes_it_unused(
    tmp_path: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry is applied afresh: a writer revoked since refuses its index files."""
    repo = opened(tmp_path)
    for n in range(2):
        backed_up(repo, tmp_path, n)
    kept_and_used(tmp_path, reads)
    victim = sorted(o.name for o in repo.storage.list("index/"))[0]
    real = index.judge_index
    monkeypatch.setattr(
        index, "judge_index", lambda name, *rest: "revoked" if name == victim else real(name, *rest)
    )
    reads.clear()

    loaded = opened(tmp_path).index()

    assert victim in reads and loaded.refused == {victim: "revoked"}
    assert victim not in loaded.files


def test_the_load_that_keeps_it_reads_it_back_and_loads_again_if_it_changed_meanwhile(
    tmp_path: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load file by file that kept the whole reads it back in place of the table it grew
    (whose holes would stay in the process); when the kept file is no longer that index
    (another process kept another, or removed it), the load is done again from the files."""
    repo = opened(tmp_path)
    for n in range(3):
        backed_up(repo, tmp_path, n)
    names = {o.name for o in repo.storage.list("index/")}
    restored = index.Index.restored
    read_back: list[int] = []

    def counted(meta, table):  # type: ignore[no-untyped-def]
        read_back.append(len(table))
        return restored(meta, table)

    monkeypatch.setattr(index.Index, "restored", counted)
    kept_path(repo).unlink()  # kept by the backups' loads
    reads.clear()
    loaded = opened(tmp_path).index()
    assert read_back == [len(loaded)] and sorted(reads) == sorted(names)  # kept, then read back
    assert answers(loaded) == answers(file_by_file(repo))

    kept_path(repo).unlink()
    read_back.clear()
    reads.clear()
    monkeypatch.setattr(index, "release_free_memory", lambda: kept_path(repo).unlink())
    again = opened(tmp_path).index()
    assert read_back == [] and sorted(reads) == sorted([*names, *names])  # loaded twice from the files
    assert answers(again) == answers(loaded) and again.files == loaded.files
