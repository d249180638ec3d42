"""The progress protocol layers report through; cli/ renders it, tests may ignore it."""

from __future__ import annotations


class ProgressSink:
    """Receives progress from long work. The default does nothing."""

    def start(self, total_bytes: int | None) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def note(self, message: str) -> None:
        pass


NO_PROGRESS = ProgressSink()
