"""Ctrl-C at a chosen line: a tracer that raises KeyboardInterrupt when a function's code
reaches a line (a signal lands between any two bytecodes; this lands it where a test asks)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import CodeType


def interrupted_at(code: CodeType, line: int, nth: int, action: Callable[[], object]) -> tuple[int, bool]:
    """Runs ``action`` with a tracer that raises KeyboardInterrupt the ``nth`` time ``code``
    reaches ``line``: how many times it reached that line, and whether the interrupt came
    out of ``action`` (False: it finished, or caught it)."""
    reached = 0

    def tracer(frame, event, arg):  # type: ignore[no-untyped-def]
        if frame.f_code is not code:
            return None

        def local(frame, event, arg):  # type: ignore[no-untyped-def]
            nonlocal reached
            if event == "line" and frame.f_lineno == line:
                reached += 1
                if reached == nth:
                    raise KeyboardInterrupt
            return local

        return local

    previous = sys.gettrace()  # coverage's, when the suite measures it
    sys.settrace(tracer)
    try:
        action()
    except KeyboardInterrupt:
        return reached, True
    finally:
        sys.settrace(previous)
    return reached, False
