"""The transfer pool's orchestration (pure logic: no store involved)."""

from __future__ import annotations

import threading
import time

import pytest

from lifeboat.assets.objects.transfer import run_batched


def test_after_a_failure_no_further_object_is_started():
    started: list[int] = []
    lock = threading.Lock()

    def transfer(item: int) -> None:
        with lock:
            started.append(item)
        if item == 0:
            raise RuntimeError("store went away")
        time.sleep(0.01)  # a transfer takes a while: the failure is seen before many more start

    with pytest.raises(RuntimeError, match="store went away"):
        run_batched(transfer, list(range(1000)), workers=2, batch=4)
    # the other worker may finish the batch it is in, and start at most one more
    assert len(started) <= 1 + 3 + 4


def test_every_object_runs_once_when_nothing_fails():
    seen: list[int] = []
    lock = threading.Lock()

    def transfer(item: int) -> None:
        with lock:
            seen.append(item)

    run_batched(transfer, list(range(1000)), workers=4, batch=16)
    assert sorted(seen) == list(range(1000))


def test_one_worker_runs_the_objects_in_order_on_the_calling_thread_and_stops_at_a_failure():
    """A restore into a directory writes with one worker: no pool, no hand-off per batch,
    and nothing after the first failure starts."""
    seen: list[tuple[int, str]] = []

    def transfer(item: int) -> None:
        seen.append((item, threading.current_thread().name))
        if item == 5:
            raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError, match="disk went away"):
        run_batched(transfer, list(range(100)), workers=1, batch=4)
    assert seen == [(i, threading.current_thread().name) for i in range(6)]
