"""The wall clock lifeboat judges ages by: snapshot times, key ages, exposure, retention.

``LIFEBOAT_CLOCK_OFFSET`` (seconds, may be negative) shifts it for one process. The test
suite uses it instead of sleeping, so that no verdict depends on how fast the machine is:
a backup run with ``-7200`` is a two-hour-old backup made through the same code path a
real one takes, and ``status`` run with ``+7200`` is status two hours from now. Locks,
audit times and Object Lock retention always use the real clock.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from lifeboat.errors import ConfigError

OFFSET_ENV = "LIFEBOAT_CLOCK_OFFSET"


def offset() -> timedelta:
    """The shift configured in the environment (zero when unset)."""
    text = os.environ.get(OFFSET_ENV, "").strip()
    if not text:
        return timedelta(0)
    try:
        return timedelta(seconds=float(text))
    except ValueError:
        raise ConfigError(f"{OFFSET_ENV}={text!r} is not a number of seconds") from None


def now() -> datetime:
    """The current time in UTC, shifted by ``LIFEBOAT_CLOCK_OFFSET``."""
    return datetime.now(UTC) + offset()
