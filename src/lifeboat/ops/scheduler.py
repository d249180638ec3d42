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
