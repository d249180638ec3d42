"""When a job is due: its cron schedule, pushed into its off-peak window, plus jitter."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from croniter import croniter

from lifeboat.policy import Window


def cron(schedule: str, start: datetime) -> croniter:
    """Five fields, or six with seconds first (as the policy documents)."""
    return croniter(schedule, start, second_at_beginning=len(schedule.split()) == 6)


def next_due(
    schedule: str,
    after: datetime,
    window: Window | None = None,
    jitter: timedelta = timedelta(0),
    rng: random.Random | None = None,
) -> datetime:
    """The next run after ``after``: a run due outside its window waits for the window.
    Schedules and windows are in local time, as cron's are."""
    if after.tzinfo is not None:
        after = after.astimezone()
    due: datetime = cron(schedule, after).get_next(datetime)
    if window is not None:
        due = window.next_start(due)
    if jitter:
        due += timedelta(seconds=(rng or random.Random()).uniform(0, jitter.total_seconds()))
    return due


def overran(window: Window | None, started: datetime, now: datetime) -> bool:
    """A job that started inside its window and is still running after the window closed."""
    return window is not None and window.contains(started.time()) and not window.contains(now.time())


# A backup with neither a timeout nor stop_at_window_end still ends: a daily job still
# running when the next one is due has hung, and would hold its lock into the next day.
DEFAULT_TIMEOUT = timedelta(days=1)


def job_deadline(
    started: datetime,
    window: Window | None = None,
    stop_at_window_end: bool = False,
    timeout: timedelta | None = None,
) -> tuple[datetime, str]:
    """When a backup started at ``started`` must have ended, and why: the close of its
    window (with stop_at_window_end), its asset's timeout, or the default, whichever is
    first. ``started`` is local time, as windows are."""
    limits = [(started + (timeout or DEFAULT_TIMEOUT), "timeout")]
    if stop_at_window_end and window is not None:
        limits.append((window.end_after(started), "window"))
    return min(limits, key=lambda limit: limit[0])
