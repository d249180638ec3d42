"""Overall deadlines: a backup that runs past its asset's ``timeout`` is stopped.

The stop unwinds like SIGTERM does (an exception in the main thread): the backup session
aborts, so no snapshot is committed, what was uploaded is indexed for the next run to
reuse, and the repository lock is released.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType

from lifeboat.errors import EXIT_FAILED, LifeboatError


class DeadlineExceeded(LifeboatError):
    """A job ran past its overall deadline and was stopped."""

    exit_code = EXIT_FAILED


class _Expired(BaseException):
    """Raised by the alarm: a BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` or ``except LifeboatError`` on the way (ours or a library's, around
    a request that is retried or a file that is skipped) can swallow the stop and let the
    backup commit after all. It becomes DeadlineExceeded where the deadline was set."""


@contextmanager
def deadline(limit: timedelta | None, message: str) -> Iterator[None]:
    """Raise DeadlineExceeded(message) in the main thread when ``limit`` has passed.

    SIGALRM, because only the main thread can be interrupted, and it is where a backup
    waits (on its worker pool, on a socket, in a retry's backoff). No limit, or not the
    main thread: no deadline (the daemon enforces its own from outside the process)."""
    if not limit or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise _Expired

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
