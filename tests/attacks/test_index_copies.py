"""A storage provider tampers with the index files a backup host stored, or hides one. The
host's loads use the copies it kept of what it wrote, never the stored files again; ``check``
still reads every stored index file, and names each one whose bytes, trailer or presence
changed. The adversary has only the storage bytes."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from lifeboat.assets.files.tree import backup_paths
from lifeboat.errors import NotFoundError
from lifeboat.repo import Repository
from lifeboat.repo.check import check_repository
from lifeboat.storage.local import LocalStorage
from tests.harness.trees import thirty_files


def _backed_up(storage: LocalStorage, tmp_path: Path) -> Repository:
    writer, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    backup_paths(writer, "config", [thirty_files(tmp_path)])
    return Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "cache")


def _index_names(storage: LocalStorage) -> list[str]:
    return sorted(obj.name for obj in storage.list("index/"))


def test_check_reads_again_the_index_files_this_host_holds_copies_of(tmp_path: Path) -> None:
    """The load uses this host's copies; damage to the stored files is still check's to find:
    one cut short, one whose signature trailer changed (the body intact)."""
    storage = LocalStorage(tmp_path / "repo")
    repo = _backed_up(storage, tmp_path)
    assert not [p for p in check_repository(repo, read_data=False).problems if p.kind == "corrupt-index"]
    cut, resigned = _index_names(storage)[:2]
    root = tmp_path / "repo"
    (root / cut).write_bytes((root / cut).read_bytes()[:-40])
    raw = (root / resigned).read_bytes()
    (root / resigned).write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    problems = {p.object: p.message for p in check_repository(repo, read_data=False).problems}
    assert "content hash differs" in problems[cut]
    assert "signature trailer" in problems[resigned]
    assert len(problems) == 2


def test_check_names_an_index_file_listed_but_not_served(tmp_path: Path) -> None:
    """A store that lists a file and answers 'not found' to its GET hides it from every
    other host's load: check says so, where a file truly gone meanwhile is no problem."""

    class Hiding(LocalStorage):
        hidden: ClassVar[set[str]] = set()

        def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
            if name in self.hidden:
                raise NotFoundError(name)
            return super().get(name, offset, length)

    storage = Hiding(tmp_path / "repo")
    repo = _backed_up(storage, tmp_path)
    victim = _index_names(storage)[0]
    storage.hidden.add(victim)
    problems = {p.object: p.message for p in check_repository(repo, read_data=False).problems}
    assert problems == {victim: f"{victim} is listed but cannot be read"}
