"""The garbage collector paused around bulk decoding (memory.collection_paused): off inside,
back as it was after the last block, whatever happens inside and from whichever thread.
Pure logic: the interpreter's own collector, no repository."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from lifeboat import memory


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_the_collector_is_off_inside_and_on_again_after_the_outermost_block() -> None:
    gc.enable()
    with memory.collection_paused():
        assert not gc.isenabled()
        with memory.collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer block is still decoding
    assert gc.isenabled()


def test_a_failure_inside_turns_the_collector_back_on() -> None:
    gc.enable()
    with pytest.raises(ValueError), memory.collection_paused():
        raise ValueError("a damaged cache")
    assert gc.isenabled()


def test_a_collector_turned_off_before_stays_off() -> None:
    gc.disable()
    with memory.collection_paused():
        pass
    assert not gc.isenabled()


def test_blocks_of_two_threads_that_overlap_leave_the_collector_on() -> None:
    """The first thread leaves while the second is inside: still off; on once both left."""
    gc.enable()
    entered, first_left, second_checked = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def second() -> None:
        with memory.collection_paused():
            entered.set()
            first_left.wait(10)
            seen.append(gc.isenabled())
            second_checked.set()

    thread = threading.Thread(target=second)
    with memory.collection_paused():
        thread.start()
        assert entered.wait(10)
    first_left.set()
    assert second_checked.wait(10)
    thread.join(10)
    assert seen == [False] and gc.isenabled()
