"""The test suite's record of internal errors, shared by every way lifeboat starts (the CLI,
its fast path, the daemon's backup children)."""

from __future__ import annotations

import os


def record_internal_error(exc: Exception) -> None:
    """The test suite sets LIFEBOAT_INTERNAL_ERROR_LOG and fails any test during which a
    lifeboat process, however deep (archive_command, a daemon child), hit an internal error:
    an operator mistake must always get a one-line error, never exit 70."""
    path = os.environ.get("LIFEBOAT_INTERNAL_ERROR_LOG")
    if not path:
        return
    import traceback

    try:
        with open(path, "a") as fh:
            fh.write("".join(traceback.format_exception(exc)[-3:]).replace("\n", " | ") + "\n")
    except OSError:
        pass
