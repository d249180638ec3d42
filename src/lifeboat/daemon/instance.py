"""One daemon per policy: an exclusive lock on a file in the state directory, holding the
running daemon's pid for the refusal message."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from lifeboat.errors import LifeboatError
from lifeboat.private import private_opener


class SingleInstance:
    """An exclusive lock on a file in the state dir: one daemon per policy."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def __enter__(self) -> SingleInstance:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+", opener=private_opener)
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            pid = self._fh.read().strip() or "?"
            raise LifeboatError(
                f"another lifeboat daemon is running for this policy (pid {pid})",
                hint="stop it first, or use a different [state] dir",
            ) from None
        self._fh.truncate(0)
        self._fh.write(str(os.getpid()))
        self._fh.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._fh is not None  # entered
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
