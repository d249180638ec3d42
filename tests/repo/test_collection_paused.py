"""The garbage collector paused around bulk decoding (memory.collection_paused): off inside,
back as it was after the last block, whatever happens inside and from whichever thread.
Pure logic: the interpreter's own collector, no repository."""

from __future__ import annotations

import gc
import inspect
import threading
from collections.abc import Iterator

import pytest

from lifeboat import memory
from tests.harness.interrupts import interrupted_at


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


def test_an_interrupt_at_any_line_never_leaves_the_collector_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C lands between any two bytecodes: a tracer raises KeyboardInterrupt at each
    line of the way in (up to the block's body) in turn. Whatever it interrupts, the
    collector is on after (a count left above zero only makes later blocks leave the
    collector alone). The way out turns the collector on first thing; an interrupt inside
    it can only reach the main thread, which is then on its way out of the process."""
    code = memory.collection_paused.__wrapped__.__code__  # type: ignore[attr-defined]
    source, first = inspect.getsourcelines(memory.collection_paused)
    body = first + next(n for n, line in enumerate(source) if line.strip() == "yield")
    lines = sorted({line for _, _, line in code.co_lines() if line is not None and first < line <= body})
    assert len(lines) > 5

    def pause_once() -> None:
        with memory.collection_paused():
            pass

    for target in lines:
        monkeypatch.setattr(memory, "_paused", {"depth": 0, "was_enabled": True})
        gc.enable()
        reached, _ = interrupted_at(code, target, 1, pause_once)
        assert reached == 1
        assert gc.isenabled(), f"off after an interrupt at line {target}"
