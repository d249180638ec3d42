"""The garbage collector's pauses (memory.collection_paused): a long-running daemon lists
snapshots every few minutes, so every way out of a pause must leave the collector as it
found it (pure logic: the real collector, no repository)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from lifeboat import memory


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_is_off_inside_and_back_on_after():
    with memory.collection_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_pause_left_by_an_exception_turns_the_collector_back_on():
    with pytest.raises(RuntimeError), memory.collection_paused():
        raise RuntimeError("listing failed")
    assert gc.isenabled()


def test_pauses_left_out_of_order_keep_it_off_until_the_last():
    """Two threads' pauses need not end in the order they began."""
    first, second = memory.collection_paused(), memory.collection_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second is still building
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_the_caller_turned_off_stays_off():
    gc.disable()
    with memory.collection_paused():
        pass
    assert not gc.isenabled()


def test_a_decorated_function_pauses_on_every_call():
    seen = []

    @memory.collection_paused()
    def build() -> None:
        seen.append(gc.isenabled())

    build()
    build()
    assert seen == [False, False]
    assert gc.isenabled()
