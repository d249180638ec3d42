"""The transfer pool's orchestration (pure logic: no store involved)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from lifeboat.assets.objects import transfer as transfer_module
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


def test_items_are_taken_only_as_far_ahead_of_the_workers_as_allowed(monkeypatch):
    """A bucket listing feeds the workers page by page: run_batched takes items from it as
    they keep up, so a listing of millions of objects is not held whole, and a failure
    stops the listing too."""
    monkeypatch.setattr(transfer_module, "AHEAD_BATCHES", 2)
    workers, batch = 2, 4
    bound = (transfer_module.AHEAD_BATCHES + 1) * workers * batch  # queued, plus the ones running
    done: list[int] = []
    lock = threading.Lock()
    release = threading.Event()
    most_ahead = [0]

    def listing():
        for i in range(500):
            with lock:
                most_ahead[0] = max(most_ahead[0], i - len(done))
            if i - len(done) > bound:
                release.set()  # already too far ahead: let the workers go, the test has failed
            yield i

    def transfer(item: int) -> None:
        # the workers hold back until the listing has had every chance to run ahead (the
        # outcome does not depend on this wait: a pool that holds the listing back passes
        # whenever the workers go on)
        if not release.wait(timeout=0.5):
            release.set()  # once: the others go on at once
        with lock:
            done.append(item)

    run_batched(transfer, listing(), workers=workers, batch=batch)
    assert most_ahead[0] <= bound
    assert sorted(done) == list(range(500))


def test_a_failing_listing_stops_the_transfers_and_is_raised():
    taken: list[int] = []
    done: list[int] = []

    def listing():
        for i in range(100):
            if i == 40:
                raise RuntimeError("listing failed")
            taken.append(i)
            yield i

    with pytest.raises(RuntimeError, match="listing failed"):
        run_batched(done.append, listing(), workers=2, batch=4)
    assert taken == list(range(40))
    assert set(done) <= set(taken)


def test_a_failing_transfer_stops_the_listing():
    taken: list[int] = []

    def listing():
        for i in range(100_000):
            taken.append(i)
            yield i

    def transfer(item: int) -> None:
        if item == 3:
            raise RuntimeError("store went away")

    with pytest.raises(RuntimeError, match="store went away"):
        run_batched(transfer, listing(), workers=2, batch=4)
    assert len(taken) < 1000


def test_nothing_more_is_taken_from_the_listing_once_a_transfer_failed(monkeypatch):
    """A newer batch fails while run_batched waits on an older one: the next item it would
    take may be a listing page, with its own retries against the store that just failed."""
    registered = threading.Event()

    class RecordingEvent(threading.Event):
        def set(self) -> None:
            super().set()
            registered.set()

    recording = SimpleNamespace(Event=RecordingEvent, Lock=threading.Lock)
    monkeypatch.setattr(transfer_module, "threading", recording)
    monkeypatch.setattr(transfer_module, "AHEAD_BATCHES", 1)  # two batches queued at most
    taken_after_the_failure: list[int] = []

    def listing():
        for i in range(100):
            if registered.is_set():
                taken_after_the_failure.append(i)
            yield i

    def transfer(item: int) -> None:
        if item == 0:  # the older batch ends only once the newer one's failure is known
            assert registered.wait(timeout=30)
        if item == 5:
            raise RuntimeError("store went away")

    with pytest.raises(RuntimeError, match="store went away"):
        run_batched(transfer, listing(), workers=2, batch=4)
    assert taken_after_the_failure == []
