"""Parallel maps that hold a bounded number of items at once.

``Executor.map`` submits the whole iterable before it hands out the first result: every item
(and every result not yet taken) is held at once. Where items are made on demand to keep
memory flat (index entries a pass at a time), that undoes it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


def map_ahead(pool: Executor, fn: Callable[[_T], _R], items: Iterable[_T], ahead: int) -> Iterator[_R]:
    """``pool.map(fn, items)``, in order, taking at most ``ahead`` items from ``items`` before
    their results are handed out."""
    pending: deque[Future[_R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= max(1, ahead):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:  # the caller stopped early (an error): nothing more starts
            future.cancel()
