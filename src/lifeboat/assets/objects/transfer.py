"""Transfers of many objects: retries with backoff, counters, and a batched thread pool."""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, TypeVar

from lifeboat.assets.objects.source import DirSource, Source
from lifeboat.errors import StorageError

if TYPE_CHECKING:
    from lifeboat.assets.objects.model import ObjectsAsset

T = TypeVar("T")
BATCH = 16
AHEAD_BATCHES = 8  # per worker: what run_batched takes from its items ahead of the workers

ATTEMPTS = 6  # backoff 0.2 s doubling: about 6 s of waiting before giving up


@dataclass
class Counters:
    """Thread-safe transfer counters (objects, bytes, retries)."""

    objects: int = 0
    downloaded: int = 0
    reused: int = 0
    bytes_downloaded: int = 0
    retries: int = 0
    vanished: int = 0  # listed or walked, then deleted before it was read

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, **values: int) -> None:
        """Add to the counters."""
        with self._lock:
            for key, value in values.items():
                setattr(self, key, getattr(self, key) + value)

    def add_download(self, size: int) -> None:
        """Count one object read whole (``add`` by name cost a tenth of a small file's read)."""
        with self._lock:
            self.downloaded += 1
            self.bytes_downloaded += size


def _retried_errors() -> tuple[type[Exception], ...]:
    """What a transfer retries; botocore's error root only once botocore is loaded: it
    raises nothing before (a dir:// source never loads it, nor boto3's ~100 ms of imports)."""
    exceptions = sys.modules.get("botocore.exceptions")
    botocore: tuple[type[Exception], ...] = (exceptions.BotoCoreError,) if exceptions is not None else ()
    return (StorageError, OSError, ValueError, *botocore)


def with_retries(what: str, fn: Any, counters: Counters) -> Any:
    """Retry throttling, 5xx and dropped connections with exponential backoff, jittered so
    that throttled threads do not come back together."""
    delay = 0.2
    for attempt in range(ATTEMPTS):
        try:
            return fn()
        except _retried_errors() as exc:  # looked up as it is raised: botocore may load in fn
            transient = not isinstance(exc, StorageError) or exc.transient
            if not transient or attempt == ATTEMPTS - 1:
                if isinstance(exc, StorageError) and transient:
                    raise StorageError(
                        f"{exc.message}; gave up after {ATTEMPTS} attempts", hint=exc.hint
                    ) from None
                if isinstance(exc, StorageError):
                    raise
                raise StorageError(
                    f"{what} kept failing after {ATTEMPTS} attempts: {type(exc).__name__}"
                ) from None
            counters.add(retries=1)
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay *= 2
    raise AssertionError("unreachable")


class SizedReads:
    """A body whose reads ask for no more than what is left of the object. http.client and
    FileIO allocate the whole requested length on every read: asking each of 32 transfer
    threads' 50 KB bodies for a 1 MiB block cost 1 MiB apiece."""

    def __init__(self, body: Any, size: int) -> None:
        self._body = body
        self._left = size

    def read(self, n: int = -1) -> bytes:
        """Read up to `size` bytes from the body."""
        if n < 0:
            return bytes(self._body.read())
        # at least 1 byte, so that the end (or a body longer than listed) is still seen
        data = bytes(self._body.read(max(1, min(n, self._left))))
        self._left -= len(data)
        return data

    def close(self) -> None:
        """Close the wrapped body."""
        self._body.close()


def transfer_workers(source: Source, asset: ObjectsAsset) -> int:
    """Network transfers wait on the store and want many threads; a local directory is
    CPU-bound here, where threads beyond the cores only fight for the interpreter."""
    if isinstance(source, DirSource):
        return max(1, min(int(asset.workers), os.cpu_count() or 2))
    return int(asset.workers)


def run_batched(fn: Callable[[T], None], items: Iterable[T], workers: int, batch: int = BATCH) -> None:
    """``fn`` over ``items`` on ``workers`` threads, a batch per task: one future per small
    object cost more than storing it. ``items`` is consumed as the workers keep up (a bucket
    listing, page by page, runs while the first pages are transferred), at most
    ``AHEAD_BATCHES`` per worker ahead of them. After the first exception no further item
    starts (against a store that went away, each would spend its own retries), and that
    exception is raised once the running ones have ended."""
    if workers <= 1:  # one thread: this one (a pool of one only adds a hand-off per batch)
        for item in items:
            fn(item)
        return
    failed = threading.Event()

    def run(part: Sequence[T]) -> None:
        for item in part:
            if failed.is_set():
                return
            try:
                fn(item)
            except BaseException:
                failed.set()
                raise

    pending: deque[Future[None]] = deque()
    parts = batched(items, batch)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            while True:
                while len(pending) >= AHEAD_BATCHES * workers:
                    pending.popleft().result()
                # nothing more is taken once a transfer failed: the next item may be a page
                # of the listing, with its own retries against the store that just failed
                part = None if failed.is_set() else next(parts, None)
                if part is None:
                    break
                pending.append(pool.submit(run, part))
            while pending:
                pending.popleft().result()
        except BaseException:
            # also when the caller is interrupted (deadline, SIGTERM) or the items fail (a
            # listing): without this the pool would carry on through every queued object
            # before the exception got out
            failed.set()
            raise


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    it = iter(items)
    while part := list(islice(it, size)):
        yield part
