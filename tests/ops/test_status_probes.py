"""The status probes' bookkeeping (ops/status.py ``Probes``), with probes that are plain
functions: pure logic, no server."""

from __future__ import annotations

import threading

import pytest

from lifeboat.assets.kind import StatusProbe
from lifeboat.ops import status


@pytest.fixture(autouse=True)
def no_probe_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no probe out in this process."""
    monkeypatch.setattr(status, "_OUT", {})


class Blocked:
    """A probe whose server took the connection and answers only when told."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        self.started.set()
        self.release.wait()
        return self.answer


def test_a_probe_still_out_is_waited_on_not_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon asks at every refresh: a server that never answers holds one probe, not
    one more each time."""
    monkeypatch.setattr(status, "PROBE_WAIT_S", 0.0)  # no answer awaited: what is out stays out
    hung = Blocked("failing")
    probe = StatusProbe("archiver of db1", hung)
    for _ in range(3):
        assert status.Probes.ask({"db": probe}).answer("db") is None  # not answered in time
    assert hung.started.wait(60)
    assert hung.calls == 1
    monkeypatch.setattr(status, "PROBE_WAIT_S", 60.0)
    waiting = status.Probes.ask({"db": probe})
    hung.release.set()
    assert waiting.answer("db") == "failing"  # the probe that was out answered this asking too
    assert hung.calls == 1
    assert status.Probes.ask({"db": probe}).answer("db") == "failing"
    assert hung.calls == 2  # once answered, the next asking asks again


def test_probes_of_other_keys_are_asked_at_once_and_what_one_raises_is_raised() -> None:
    first, second = Blocked("a"), Blocked("b")
    asked = status.Probes.ask({"one": StatusProbe("k1", first), "two": StatusProbe("k2", second)})
    second.release.set()
    assert asked.answer("two") == "b"  # answered while the first is still out
    first.release.set()
    assert asked.answer("one") == "a"
    assert asked.answer("three") is None  # an asset without a probe

    def broken() -> str:
        raise RuntimeError("a kind's bug")

    with pytest.raises(RuntimeError, match="a kind's bug"):
        status.Probes.ask({"x": StatusProbe("k3", broken)}).answer("x")
