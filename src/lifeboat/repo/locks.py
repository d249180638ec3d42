"""Repository locks: many shared holders (backups) or one exclusive holder (prune, forget).

A lock is a small immutable object ``locks/<id>``. Acquiring = write ours, then list: if a
conflicting live lock exists, release ours and retry until the deadline. A lock is refreshed
by writing a new one and releasing the old.

Staleness is judged by storage time only: a lock is stale once the storage's timestamp of
our own just-written lock is more than STALE_AFTER past (or before) the lock's storage
timestamp. The time a writer puts in the body is informative only, so a host whose clock
runs days ahead cannot write a lock that never expires. A lock held by a dead process on
this host is stale at once.

Releasing deletes the lock; where the credentials may not delete (a least-privilege backup
host), a ``locks/<id>.released`` marker is written instead and readers ignore the lock. Such
markers, and locks whose process vanished, go stale by time like any lock; ``lifeboat
unlock`` removes them with credentials that may delete.
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
RELEASED = ".released"


@dataclass(frozen=True)
class LockInfo:
    """One lock object: who holds it, since when, shared or exclusive."""

    name: str
    exclusive: bool
    host: str
    pid: int
    time: float  # the writer's clock: shown, never trusted
    operation: str
    stored: float = 0.0  # the storage's timestamp of the lock object


def _read_lock(storage: Storage, name: str, stored: float) -> LockInfo | None:
    try:
        data = json.loads(storage.get(name))
        return LockInfo(
            name,
            bool(data["exclusive"]),
            str(data["host"]),
            int(data["pid"]),
            float(data["time"]),
            str(data.get("operation", "")),
            stored,
        )
    except (NotFoundError, ValueError, KeyError, TypeError, AttributeError):
        return None


def storage_age(lock: LockInfo, storage_now: float) -> float:
    """Seconds between the lock's storage timestamp and the storage's now; a lock dated in
    the future ages just the same, so it goes stale STALE_AFTER after (or before) it."""
    return abs(storage_now - lock.stored)


def is_live(lock: LockInfo, storage_now: float) -> bool:
    """Whether the lock is honoured: not stale, and its process alive when on this host."""
    if storage_age(lock, storage_now) > STALE_AFTER:
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
    """Every lock not released by a marker (markers themselves are not locks)."""
    stats = {obj.name: obj.mtime for obj in storage.list("locks/")}
    released = {name[: -len(RELEASED)] for name in stats if name.endswith(RELEASED)}
    locks = []
    for name, stored in stats.items():
        if name.endswith(RELEASED) or name in released:
            continue
        info = _read_lock(storage, name, stored)
        if info is not None:
            locks.append(info)
    return locks


def lock_objects(storage: Storage) -> dict[str, float]:
    """Every object under locks/ (locks, release markers, unreadable leftovers) and its
    storage timestamp: what ``unlock`` may remove."""
    return {obj.name: obj.mtime for obj in storage.list("locks/")}


def storage_now(storage: Storage, probe: str | None = None) -> float:
    """The storage's current time: the timestamp of an object we just wrote (``probe``), or
    of a fresh probe object when we have none. Falls back to this host's clock only when
    the storage reports no time at all."""
    name = probe or f"locks/{secrets.token_hex(16)}{RELEASED}"
    if probe is None:
        storage.put(name, b"{}", retain=False)
    try:
        stamp = storage.stat(name).mtime
    except NotFoundError:
        stamp = time.time()
    finally:
        if probe is None:
            release_lock(storage, name, marker=False)
    return stamp


def release_lock(storage: Storage, name: str, *, marker: bool = True) -> bool:
    """Delete the lock; when that is refused, mark it released. True when deleted."""
    try:
        storage.delete(name)
        return True
    except StorageError:
        pass
    if marker:
        try:
            storage.put(name + RELEASED, b"{}", retain=False)
        except StorageError:
            pass  # it goes stale by time
    return False


def _uptime() -> float:
    """Seconds on a clock that keeps counting while the machine sleeps or the process is
    stopped (CLOCK_BOOTTIME): the wall clock may jump, and a monotonic clock skips a suspend."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)  # Linux's; elsewhere the monotonic clock
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


def describe_age(seconds: float) -> str:
    """A lock's age for humans (seconds, minutes, hours)."""
    if seconds < 90:
        return f"{int(seconds)} s"
    if seconds < 5400:
        return f"{int(seconds // 60)} min"
    return f"{seconds / 3600:.1f} h"


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
        self._written = 0.0  # _uptime() of the last lock object written

    def ensure_held(self) -> None:
        """Raise when this lock may no longer be honoured, before what it protects is made
        visible or deleted: its object is gone (`unlock`), or it went unrefreshed so long
        that other hosts may judge it stale (a process suspended, a storage its refreshes
        could not reach) and a prune may have deleted what this process counts on."""
        quiet = _uptime() - self._written
        name = self.name  # once: the refresh thread renames it, then removes the old object
        try:
            gone = not name or (not self.storage.exists(name) and self.name == name)
        except StorageError:
            gone = False  # the commit's own write says whether the storage is there
        if gone or quiet > STALE_AFTER - REFRESH_EVERY:
            why = "its lock object was removed" if gone else f"it was not refreshed for {describe_age(quiet)}"
            raise RepoLockedError(
                f"the repository lock of this {self.operation} was lost ({why}): stopped before "
                "committing to what another process may have removed meanwhile",
                hint="run it again (a backup's packs written so far are reused or pruned)",
            )

    def _write(self, name: str) -> None:
        body = {
            "exclusive": self.exclusive,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": time.time(),
            "operation": self.operation,
        }
        self.storage.put(name, json.dumps(body).encode(), retain=False)
        self._written = _uptime()

    def _conflicts(self) -> tuple[list[LockInfo], float]:
        locks = list_locks(self.storage)
        now = next((lock.stored for lock in locks if lock.name == self.name), None)
        if now is None:
            now = storage_now(self.storage, self.name)
        conflicts = [
            lock
            for lock in locks
            if lock.name != self.name and is_live(lock, now) and (self.exclusive or lock.exclusive)
        ]
        return conflicts, now

    def acquire(self) -> None:
        """Takes the lock (RepoLockedError when a conflicting live lock exists). Interrupted
        half-way (Ctrl-C, SIGTERM while the lock object is being written), it takes back
        what it wrote: the caller's ``with`` never started, so nobody else would."""
        try:
            self._acquire()
        except BaseException:
            if self.name:
                self._remove(self.name)
                self.name = ""
            raise

    def _acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        delay = 0.2
        while True:
            self.name = f"locks/{secrets.token_hex(16)}"  # named before it exists: see acquire
            self._write(self.name)
            conflicts, now = self._conflicts()
            if not conflicts:
                break
            self._remove(self.name)
            self.name = ""
            if time.monotonic() >= deadline:
                other = conflicts[0]
                age = describe_age(storage_age(other, now))
                raise RepoLockedError(
                    f"repository is locked by {other.operation or 'another process'} "
                    f"(pid {other.pid} on {other.host}, {'exclusive' if other.exclusive else 'shared'}, "
                    f"written {age} ago by storage time)",
                    hint=(
                        f"wait for it to finish; if that process is gone, the lock goes stale "
                        f"{int(STALE_AFTER // 60)} minutes after it was written, or remove it "
                        "now with 'lifeboat unlock --stale' (or 'lifeboat unlock --all' once "
                        "you are sure no lifeboat process uses the repository)"
                    ),
                )
            time.sleep(delay + secrets.randbelow(100) / 1000)
            delay = min(delay * 2, 5.0)
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True, name="lock-refresh")
        self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            try:
                new = f"locks/{secrets.token_hex(16)}"
                self._write(new)
                old, self.name = self.name, new
                self._remove(old)
            except StorageError:
                pass  # retried at the next tick; staleness takes 30 minutes

    def _remove(self, name: str) -> None:
        release_lock(self.storage, name)

    def release(self) -> None:
        """Removes the lock object."""
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


@dataclass
class UnlockReport:
    """What ``repo unlock`` removed and what it left."""

    removed: list[LockInfo]
    leftovers: list[str]  # release markers and unreadable objects removed
    live: list[LockInfo]  # kept: still live (only without ``everything``)
    failed: list[str]  # the storage refused the deletion


def unlock(storage: Storage, *, everything: bool) -> UnlockReport:
    """Remove stale locks (by storage time, or of a dead process on this host), released
    ones and their markers; with ``everything``, live locks too."""
    now = storage_now(storage)
    objects = lock_objects(storage)
    locks = {lock.name: lock for lock in list_locks(storage)}
    report = UnlockReport([], [], [], [])
    for name in sorted(objects):
        lock = locks.get(name)
        if lock is not None and not everything and is_live(lock, now):
            report.live.append(lock)
            continue
        try:
            storage.delete(name)
        except StorageError:
            report.failed.append(name)
            continue
        if lock is not None:
            report.removed.append(lock)
        else:
            report.leftovers.append(name)
    return report
