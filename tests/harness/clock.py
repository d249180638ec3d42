"""The clock the tests control: a shift applied to every lifeboat process a runner starts.

lifeboat reads ``LIFEBOAT_CLOCK_OFFSET`` (src/lifeboat/clock.py) for snapshot times, key
ages, exposure, retention and run history. A backup made with the clock two hours back
is a two-hour-old backup, made through the code path a real one takes; no test waits for
time to pass.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

OFFSET_ENV = "LIFEBOAT_CLOCK_OFFSET"


@dataclass
class Clock:
    """Seconds to shift lifeboat's clock by (negative: the past)."""

    offset: float = 0.0
    frozen_at: float | None = None  # epoch seconds lifeboat's clock stands still at, if set

    def advance(
        self, seconds: float = 0.0, *, minutes: float = 0.0, hours: float = 0.0, days: float = 0.0
    ) -> None:
        self.offset += seconds + 60 * minutes + 3600 * hours + 86400 * days

    def set(self, seconds: float) -> None:
        self.offset = float(seconds)

    @contextmanager
    def shifted(self, seconds: float) -> Iterator[None]:
        """Run the block with the clock ``seconds`` away from where it is now."""
        before = self.offset
        self.offset += seconds
        try:
            yield
        finally:
            self.offset = before

    def freeze(self, at: float) -> None:
        """Hold lifeboat's clock at ``at`` (epoch seconds, plus ``offset``) for every later
        run, however long the test and the fixtures before it take."""
        self.frozen_at = at

    def env(self) -> dict[str, str]:
        """The environment entry for a child process (none when the clock is not shifted)."""
        offset = self.offset
        if self.frozen_at is not None:
            offset += self.frozen_at - time.time()
        return {OFFSET_ENV: repr(offset)} if offset else {}

    def apply(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with this clock's offset in place of whatever offset it carried."""
        out = {k: v for k, v in env.items() if k != OFFSET_ENV}
        out.update(self.env())
        return out


def real_env() -> dict[str, str]:
    """This process's environment without any clock shift."""
    return {k: v for k, v in os.environ.items() if k != OFFSET_ENV}
