"""A copy that runs while a backup consolidates the primary's index (both under shared
locks): the index files it listed are merged into one written after its listing. The copy
must end with that file, or it holds snapshots and packs that no index entry finds."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from lifeboat.repo import Repository
from lifeboat.repo.consolidate import consolidate_indexes
from lifeboat.repo.copy import copy_repository
from lifeboat.storage import open_storage


def test_index_files_merged_while_a_copy_runs_reach_the_copy(tmp_path: Path) -> None:
    source = open_storage(f"file://{tmp_path / 'primary'}")
    repo, key, recovery = Repository.create(source, cache_dir=tmp_path / "cache")
    snapshots = []
    for n in range(4):  # an index file each
        with repo.backup("app", "files") as session:
            session.add_bytes("config.txt", f"version {n}\n".encode() * 500)
            snapshots.append(session.commit())
    before = {o.name for o in source.list("index/")}
    assert len(before) >= 4
    get = source.get
    merged: list[Any] = []
    once = threading.Lock()  # the copy reads index files on several threads at a time

    def get_while_a_backup_consolidates(name: str) -> bytes:
        if name.startswith("index/"):
            with once:
                if not merged:  # at the first index file the copy reads
                    writer = Repository.open(
                        open_storage(source.url), backup_key=key, cache_dir=tmp_path / "other"
                    )
                    merged.append(consolidate_indexes(writer, limit=1))
        return get(name)

    source.get = get_while_a_backup_consolidates  # type: ignore[method-assign]
    copy = open_storage(f"file://{tmp_path / 'copy'}")
    copy_repository(source, copy)

    assert merged[0] is not None and not before & {o.name for o in source.list("index/")}
    assert {o.name for o in copy.list("index/")} >= {o.name for o in source.list("index/")}
    reader = Repository.open(copy, recovery_key=recovery)
    assert reader.check().ok
    out = tmp_path / "restored"
    reader.reader(reader.find_snapshot("app", snapshot_id=snapshots[0].id)).restore_tree(out)
    assert (out / "config.txt").read_bytes() == b"version 0\n" * 500


def test_a_prune_of_the_copy_waits_while_a_copy_runs(tmp_path: Path) -> None:
    """Packs reach the copy before the index files that list them: a prune of the copy in
    between would take them for orphans and delete them. The copy holds a shared lock on
    its target too, so that prune is refused until the copy is done."""
    from lifeboat.errors import RepoLockedError
    from lifeboat.repo.locks import RepoLock

    source = open_storage(f"file://{tmp_path / 'primary'}")
    repo, _key, recovery = Repository.create(source)
    with repo.backup("app", "files") as session:
        session.add_bytes("config.txt", b"copied\n" * 500)
        snapshot = session.commit()
    copy = open_storage(f"file://{tmp_path / 'copy'}")
    once = threading.Lock()
    refused: list[BaseException] = []
    tried = threading.Event()  # once: the copy reads packs on several threads at a time
    get = source.get

    def get_while_the_copy_is_pruned(name: str) -> bytes:
        if name.startswith("data/") and not tried.is_set():
            with once:
                if not tried.is_set():
                    tried.set()
                    try:
                        RepoLock(copy, exclusive=True, operation="prune", wait=0).acquire()
                    except RepoLockedError as exc:
                        refused.append(exc)
        return get(name)

    source.get = get_while_the_copy_is_pruned  # type: ignore[method-assign]
    copy_repository(source, copy)

    assert len(refused) == 1 and "copy from" in str(refused[0])
    reader = Repository.open(copy, recovery_key=recovery)
    out = tmp_path / "restored"
    reader.reader(reader.find_snapshot("app", snapshot_id=snapshot.id)).restore_tree(out)
    assert (out / "config.txt").read_bytes() == b"copied\n" * 500
