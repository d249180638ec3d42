"""Waiting on events: poll a condition until it holds, with a deadline that fails loudly.

Tests never sleep a fixed time to let something happen; they wait for the thing itself
(a file, a row, a log line, a process state) and fail naming what never came.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, timeout: float = 90, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(interval)
