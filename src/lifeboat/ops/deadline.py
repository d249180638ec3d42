"""Overall deadlines: a backup that runs past its asset's ``timeout`` is stopped.

The stop unwinds like SIGTERM does (an exception in the main thread): the backup session
aborts, so no snapshot is committed, what was uploaded is indexed for the next run to
reuse, and the repository lock is released. An unwind that has not ended UNWIND_GRACE
after the deadline is ended by a watchdog: the process exits, as a killed backup would,
and a killed backup leaves the repository consistent (its lock is left for `unlock
--stale`, its last packs for the next run to adopt).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType

from lifeboat.errors import EXIT_FAILED, LifeboatError
from lifeboat.escaped_text import shown
from lifeboat.policy_values import format_duration

# A stop waits for the transfers already in flight (a large object over a slow link can
# take minutes): only an unwind that has not ended long after that is taken to be stuck.
UNWIND_GRACE = timedelta(minutes=10)


class DeadlineExceeded(LifeboatError):
    """A job ran past its overall deadline and was stopped."""

    exit_code = EXIT_FAILED


class _Expired(BaseException):
    """Raised by the alarm: a BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` or ``except LifeboatError`` on the way (ours or a library's, around
    a request that is retried or a file that is skipped) can swallow the stop and let the
    backup commit after all. It becomes DeadlineExceeded where the deadline was set."""


def exit_stuck(message: str) -> None:
    """End the process whose stopped job did not unwind: the alarm can land while the main
    thread holds a lock that is not re-entrant (a pool's shutdown lock, a logging handler's),
    and the unwind then waits on it forever. Nothing here takes a lock the main thread may
    hold: a raw write to stderr, then an exit that runs no clean-up."""
    os.write(2, f"lifeboat: error: {shown(message)}\n".encode(errors="replace"))
    os._exit(EXIT_FAILED)


@contextmanager
def deadline(
    limit: timedelta | None,
    message: str,
    *,
    grace: timedelta = UNWIND_GRACE,
    stuck: Callable[[str], None] = exit_stuck,
) -> Iterator[None]:
    """Raise DeadlineExceeded(message) in the main thread when ``limit`` has passed, and
    call ``stuck(message)`` from a watchdog thread if the block has still not ended
    ``grace`` after that.

    SIGALRM, because only the main thread can be interrupted, and it is where a backup
    waits (on its worker pool, on a socket, in a retry's backoff). No limit, or not the
    main thread: no deadline (the daemon enforces its own from outside the process)."""
    if not limit or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise _Expired

    ended = threading.Event()
    # started now, not from the alarm: a handler that starts a thread takes threading's own
    # locks, which the interrupted main thread may hold
    watchdog = threading.Thread(
        target=_watch, args=(ended, limit, grace, stuck, message), name="deadline-watchdog", daemon=True
    )
    watchdog.start()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit.total_seconds())
    try:
        yield
    except _Expired:
        raise DeadlineExceeded(
            message, hint="raise the asset's timeout, or find what slowed it down"
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        ended.set()


def _watch(
    ended: threading.Event, limit: timedelta, grace: timedelta, stuck: Callable[[str], None], message: str
) -> None:
    if not ended.wait((limit + grace).total_seconds()):
        stuck(f"{message}; it had not stopped {format_duration(grace)} later, so it was ended")
