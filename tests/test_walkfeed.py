"""The walk feeder's order and its bound (lifeboat/assets/walkfeed.py): entries reach the
tree in walk order, and while a batch with a large file is still being read, no more than
HELD_ENTRIES entries wait behind it: the walk waits for the batch instead of holding every
file after it (memory would grow with the number of files). Pure logic: a stand-in
session records what the tree is given, and the batch being read is a Future the test
completes."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

from lifeboat.assets.walkfeed import HELD_ENTRIES, Read, WalkFeeder
from lifeboat.repo import Entry


class RecordingSession:
    def __init__(self) -> None:
        self.paths: list[str] = []

    def put(self, entry: Entry, identity: str | None = None) -> None:
        self.paths.append(entry.path)


class Feeder(WalkFeeder[str, str]):
    def add(self, item: str) -> None:
        self.hand_on(Entry(path=item, type="dir"))

    def read_batch(self, batch: list[str]) -> list[Read]:
        return [(Entry(path=name), None) for name in batch]


class WatchedFuture(Future[list[Read]]):
    """A batch still being read; ``waited`` is set once the walk waits for it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = threading.Event()

    def result(self, timeout: float | None = None) -> Any:
        self.waited.set()
        return super().result(timeout)


def test_entries_behind_a_batch_being_read_are_bounded_and_keep_their_order() -> None:
    session = RecordingSession()
    feeder = Feeder(session)  # type: ignore[arg-type]
    reading: WatchedFuture = WatchedFuture()
    feeder.slots.append(reading)  # a batch with a large file, on a reader thread
    feeder.reading = 1
    names = [f"d{i:05}" for i in range(2 * HELD_ENTRIES)]
    walk = threading.Thread(target=lambda: [feeder.add(name) for name in names])
    walk.start()

    assert reading.waited.wait(30), "the walk never waited for the batch ahead of it"
    assert len(feeder.slots) == HELD_ENTRIES  # the batch and the entries behind it, no more
    assert session.paths == []  # nothing overtook the batch
    reading.set_result([(Entry(path="big.bin"), "identity")])
    walk.join(30)

    assert not walk.is_alive()
    assert session.paths == ["big.bin", *names]


def test_the_walk_waits_for_the_batch_ahead_of_it_not_for_every_batch_being_read() -> None:
    """Two batches being read: once the first is done, the walk goes on behind the second
    (the readers keep busy) until the bound holds it again."""
    session = RecordingSession()
    feeder = Feeder(session)  # type: ignore[arg-type]
    first: WatchedFuture = WatchedFuture()
    second: WatchedFuture = WatchedFuture()
    feeder.slots.extend([first, second])
    feeder.reading = 2
    names = [f"d{i:05}" for i in range(2 * HELD_ENTRIES)]
    walk = threading.Thread(target=lambda: [feeder.add(name) for name in names])
    walk.start()

    assert first.waited.wait(30)
    first.set_result([(Entry(path="a.bin"), None)])
    assert second.waited.wait(30)
    assert len(feeder.slots) == HELD_ENTRIES  # it went on after the first, up to the bound
    assert session.paths == ["a.bin"]
    second.set_result([(Entry(path="b.bin"), None)])
    walk.join(30)

    assert not walk.is_alive()
    assert session.paths == ["a.bin", "b.bin", *names]
