"""The run history: every job run (start, end, outcome, bytes), append-only JSON lines in
the state directory, so success rates and trends survive daemon restarts."""

from __future__ import annotations

import fcntl
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

from lifeboat import clock
from lifeboat.private import private_dir, private_opener


@dataclass
class Run:
    job: str
    asset: str | None
    started: str
    finished: str
    outcome: str  # ok | failed | stopped (window closed) | abandoned
    seconds: float
    bytes: int = 0
    attempt: int = 1
    error: str | None = None


class RunHistory:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, run: Run) -> None:
        private_dir(self.path.parent, tighten=False)
        with open(self.path, "a", opener=private_opener) as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(json.dumps(asdict(run)) + "\n")

    def all(self) -> list[Run]:
        if not self.path.exists():
            return []
        runs = []
        for line in self.path.read_text().splitlines():
            try:
                runs.append(Run(**json.loads(line)))
            except (ValueError, TypeError):
                continue
        return runs

    def last(self, job: str, asset: str | None = None, outcome: str | None = None) -> Run | None:
        for run in reversed(self.all()):
            if run.job == job and run.asset == asset and (outcome is None or run.outcome == outcome):
                return run
        return None

    def success_rate(self, job: str, asset: str | None, now: datetime, days: int = 30) -> float | None:
        since = (now - timedelta(days=days)).isoformat()
        runs = [r for r in self.all() if r.job == job and r.asset == asset and r.started >= since]
        return sum(r.outcome == "ok" for r in runs) / len(runs) if runs else None


def now_iso() -> str:
    return clock.now().isoformat(timespec="milliseconds")
