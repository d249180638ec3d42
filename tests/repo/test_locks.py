"""Repository locks judged by storage time: a writer's clock cannot make a lock immortal."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pytest

from lifeboat.errors import RepoLockedError, StorageError
from lifeboat.repo.locks import RELEASED, STALE_AFTER, RepoLock, list_locks, unlock
from lifeboat.storage.local import LocalStorage

DAY = 86400.0


def plant_lock(root: Path, *, body_time: float, stored: float, exclusive: bool = True) -> str:
    """A lock another host wrote: ``body_time`` is its clock, ``stored`` the file's mtime
    (the storage's timestamp)."""
    name = f"locks/{secrets.token_hex(16)}"
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"exclusive": exclusive, "host": "elsewhere.example", "pid": 4242, "time": body_time}
    path.write_text(json.dumps({**body, "operation": "prune"}))
    os.utime(path, (stored, stored))
    return name


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "repo")


def test_future_dated_lock_goes_stale_after_its_ttl_by_storage_time(storage: LocalStorage) -> None:
    now = time.time()
    # written by a host whose clock ran ten days ahead, stored longer ago than the TTL
    stale = plant_lock(storage.root, body_time=now + 10 * DAY, stored=now - STALE_AFTER - 120)
    with RepoLock(storage, exclusive=True, operation="prune", wait=0):
        names = {lock.name for lock in list_locks(storage)}
        assert stale in names and len(names) == 2  # ignored, not removed behind anyone's back


def test_fresh_lock_blocks_whatever_its_body_says(storage: LocalStorage) -> None:
    now = time.time()
    plant_lock(storage.root, body_time=now - 10 * DAY, stored=now)  # "ancient" by a slow clock
    with pytest.raises(RepoLockedError) as err:
        RepoLock(storage, exclusive=False, operation="backup", wait=0).acquire()
    assert "lifeboat unlock --stale" in (err.value.hint or "")
    assert "by storage time" in err.value.message and "pid 4242 on elsewhere.example" in err.value.message


def test_lock_stored_far_in_the_future_is_stale(storage: LocalStorage) -> None:
    now = time.time()
    plant_lock(storage.root, body_time=now, stored=now + STALE_AFTER + 600)
    with RepoLock(storage, exclusive=True, operation="prune", wait=0):
        pass


def test_unlock_stale_removes_only_stale_locks(storage: LocalStorage) -> None:
    now = time.time()
    stale = plant_lock(storage.root, body_time=now + 10 * DAY, stored=now - STALE_AFTER - 120)
    live = plant_lock(storage.root, body_time=now, stored=now)
    report = unlock(storage, everything=False)
    assert [lock.name for lock in report.removed] == [stale]
    assert [lock.name for lock in report.live] == [live]
    assert not (storage.root / stale).exists() and (storage.root / live).exists()
    report = unlock(storage, everything=True)
    assert [lock.name for lock in report.removed] == [live]
    assert list(storage.list("locks/")) == []


class NoDeleteStorage(LocalStorage):
    """The credentials of a least-privilege backup host: may put, may not delete."""

    def delete(self, name: str) -> None:
        raise StorageError(f"deleting {name}: access denied")


def test_locks_release_without_delete_permission(tmp_path: Path) -> None:
    storage = NoDeleteStorage(tmp_path / "repo")
    with RepoLock(storage, exclusive=False, operation="backup", wait=0) as held:
        name = held.name
    # the lock object stays, marked released, and no longer blocks an exclusive holder
    assert (storage.root / name).exists() and (storage.root / (name + RELEASED)).exists()
    assert list_locks(storage) == []
    with RepoLock(storage, exclusive=True, operation="prune", wait=0):
        pass
    # an admin with delete rights clears the leftovers
    report = unlock(LocalStorage(tmp_path / "repo"), everything=False)
    assert len(report.leftovers) >= 2 and list(storage.list("locks/")) == []


class _InterruptedAfterPut(LocalStorage):
    """Ctrl-C (or SIGTERM) landing just after the lock object reached the storage."""

    def put(self, name: str, data: bytes, **kwargs: object) -> None:
        super().put(name, data, **kwargs)  # type: ignore[arg-type]
        if name.startswith("locks/") and not name.endswith(RELEASED):
            raise KeyboardInterrupt


def test_an_interrupted_acquire_takes_back_the_lock_it_wrote(tmp_path: Path) -> None:
    storage = _InterruptedAfterPut(tmp_path / "repo")
    lock = RepoLock(storage, exclusive=False, operation="backup db")
    with pytest.raises(KeyboardInterrupt):
        lock.acquire()
    # the caller's `with` never started, so only acquire itself can remove it
    assert list_locks(storage) == []
    prune = RepoLock(LocalStorage(tmp_path / "repo"), exclusive=True, operation="prune", wait=0)
    prune.acquire()  # nothing live is left to conflict with (RepoLockedError otherwise)
    prune.release()


def test_a_backup_whose_lock_was_lost_does_not_commit(tmp_path: Path) -> None:
    """A backup suspended past the lock's staleness (SIGSTOP, a paused VM), or whose lock
    an operator removed with `unlock --all`: another host's prune may have deleted chunks
    it counts on, so it stops before its snapshot header instead of committing to them."""
    from lifeboat.repo import Repository
    from lifeboat.repo.locks import REFRESH_EVERY
    from lifeboat.storage import open_storage

    repo, _, _ = Repository.create(open_storage(f"file://{tmp_path / 'repo'}"))
    for lose in ("unlocked", "suspended"):
        session = repo.backup("app", "files")
        with session:
            session.add_bytes("config.txt", b"version 1\n" * 100)
            lock = session._repo_lock
            if lose == "unlocked":
                unlock(repo.storage, everything=True)
            else:  # its last refresh as long ago as a suspension would leave it
                lock._written -= STALE_AFTER - REFRESH_EVERY + 60
            with pytest.raises(RepoLockedError, match="lock of this backup app was lost"):
                session.commit()
    assert list(repo.storage.list("snapshots/")) == []


def test_a_held_lock_passes_its_check(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    with RepoLock(storage, exclusive=True, operation="prune") as lock:
        lock.ensure_held()
