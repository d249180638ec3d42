"""Repository locks: many shared holders (backups) or one exclusive holder (prune, forget).

A lock is a small immutable object ``locks/<id>``. Acquiring = write ours, then list: if a
conflicting live lock exists, remove ours and retry until the deadline. A lock is refreshed
by writing a new one and removing the old. Locks older than STALE_AFTER, or held by a dead
process on this host, are ignored.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

from lifeboat.errors import NotFoundError, RepoLockedError, StorageError
from lifeboat.storage.base import Storage

STALE_AFTER = 30 * 60.0
REFRESH_EVERY = 5 * 60.0


@dataclass(frozen=True)
class LockInfo:
    name: str
    exclusive: bool
    host: str
    pid: int
    time: float
    operation: str


def _read_lock(storage: Storage, name: str) -> LockInfo | None:
    try:
        data = json.loads(storage.get(name))
        return LockInfo(
            name,
            bool(data["exclusive"]),
            str(data["host"]),
            int(data["pid"]),
            float(data["time"]),
            str(data.get("operation", "")),
        )
    except (NotFoundError, ValueError, KeyError, TypeError):
        return None


def _is_live(lock: LockInfo, now: float) -> bool:
    if now - lock.time > STALE_AFTER:
        return False
    if lock.host == socket.gethostname():
        try:
            os.kill(lock.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


def list_locks(storage: Storage) -> list[LockInfo]:
    locks = []
    for obj in storage.list("locks/"):
        info = _read_lock(storage, obj.name)
        if info is not None:
            locks.append(info)
    return locks


class RepoLock:
    """Held for the duration of a ``with`` block; refreshed in the background."""

    def __init__(self, storage: Storage, *, exclusive: bool, operation: str, wait: float = 30.0) -> None:
        self.storage = storage
        self.exclusive = exclusive
        self.operation = operation
        self.wait = wait
        self.name = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> str:
        name = f"locks/{secrets.token_hex(16)}"
        body = {
            "exclusive": self.exclusive,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": time.time(),
            "operation": self.operation,
        }
        self.storage.put(name, json.dumps(body).encode(), retain=False)
        return name

    def _conflicts(self) -> list[LockInfo]:
        now = time.time()
        return [
            lock
            for lock in list_locks(self.storage)
            if lock.name != self.name and _is_live(lock, now) and (self.exclusive or lock.exclusive)
        ]

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        delay = 0.2
        while True:
            self.name = self._write()
            conflicts = self._conflicts()
            if not conflicts:
                break
            self._remove(self.name)
            if time.monotonic() >= deadline:
                other = conflicts[0]
                raise RepoLockedError(
                    f"repository is locked by {other.operation or 'another process'} "
                    f"(pid {other.pid} on {other.host}, {'exclusive' if other.exclusive else 'shared'})",
                    hint="wait for it to finish; a lock of a dead process expires after 30 minutes",
                )
            time.sleep(delay + secrets.randbelow(100) / 1000)
            delay = min(delay * 2, 5.0)
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True, name="lock-refresh")
        self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            try:
                old, self.name = self.name, self._write()
                self._remove(old)
            except StorageError:
                pass  # retried at the next tick; staleness takes 30 minutes

    def _remove(self, name: str) -> None:
        try:
            self.storage.delete(name)
        except StorageError:
            pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.name:
            self._remove(self.name)
            self.name = ""

    def __enter__(self) -> RepoLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
