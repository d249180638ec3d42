"""Copies of the repository (3-2-1): run one, and measure how far each lags behind.

Policy-level glue around lifeboat.repo.copy, shared by `lifeboat copy`, the daemon's copy
jobs and `status`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lifeboat import clock, runtime
from lifeboat.errors import StorageError
from lifeboat.repo.copy import CopyLag, CopyReport, copy_lag, copy_repository
from lifeboat.storage import open_storage
from lifeboat.storage.base import Storage


def copy_storage(policy: Any, name: str) -> Storage:
    """The storage of [copies.NAME]."""
    c = policy.copy_config(name)
    return open_storage(
        str(c.url),
        endpoint_url=c.endpoint_url,
        lock_days=c.lock_days,
        region=c.region,
        stall_timeout=c.stall_timeout.total_seconds(),
    )


def run_copy(
    policy: Any, name: str, *, on_object: Callable[[str, int], None] = lambda _n, _s: None
) -> CopyReport:
    """Copy what [copies.NAME] lacks; the audit entry records the outcome either way."""
    c = policy.copy_config(name)
    audit = runtime.audit_log(policy)
    source = runtime.storage_for(policy)
    target = copy_storage(policy, name)
    try:
        report = copy_repository(source, target, workers=c.workers, on_object=on_object)
    except Exception as exc:
        audit.append("copy", outcome="failed", copy=name, target=str(c.url), error=str(exc)[:200])
        raise
    finally:
        source.close()
        target.close()
    audit.append(
        "copy", copy=name, target=str(c.url), objects=report.objects, bytes=report.bytes, copied=report.copied
    )
    return report


@dataclass(frozen=True)
class CopyState:
    """One copy as `status` shows it."""

    name: str
    url: str
    copy_rpo_s: float
    lag_s: float | None  # None: the copy could not be read
    missing_snapshots: int
    oldest_missing: str | None  # "ASSET @ time" of the oldest snapshot the copy lacks
    error: str | None = None

    @property
    def breach(self) -> bool:
        """An unreadable copy protects nothing: it breaches as surely as a stale one."""
        return self.lag_s is None or self.lag_s > self.copy_rpo_s


def copy_states(policy: Any, primary_snapshots: list[Any]) -> list[CopyState]:
    now = clock.now()
    states = []
    for name, c in sorted(policy.copies.items()):
        rpo = c.copy_rpo.total_seconds()
        try:
            target = copy_storage(policy, name)
            try:
                lag: CopyLag = copy_lag(primary_snapshots, target, now)
            finally:
                target.close()
        except StorageError as exc:
            states.append(CopyState(name, str(c.url), rpo, None, 0, None, exc.message))
            continue
        oldest = lag.oldest_missing
        states.append(
            CopyState(
                name,
                str(c.url),
                rpo,
                lag.seconds,
                len(lag.missing),
                f"{oldest.asset} @ {oldest.time.isoformat(timespec='seconds')}" if oldest else None,
            )
        )
    return states
