"""Copies of the repository (3-2-1): run one, and measure how far each lags behind.

Policy-level glue around lifeboat.repo.copy, shared by `lifeboat copy`, the daemon's copy
jobs and `status`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lifeboat import clock, runtime
from lifeboat.errors import ConfigError, StorageError
from lifeboat.redact import redact
from lifeboat.repo.copy import CopyLag, CopyReport, copy_lag, copy_repository
from lifeboat.storage.base import Storage

if TYPE_CHECKING:
    from lifeboat.policy import Policy


def copy_storage(policy: Policy, name: str) -> Storage:
    """The storage of [copies.NAME]."""
    from lifeboat.runtime import open_location

    return open_location(policy.copy_config(name))


def run_copy(
    policy: Policy, name: str, *, on_object: Callable[[str, int], None] = lambda _n, _s: None
) -> CopyReport:
    """Copy what [copies.NAME] lacks; the audit entry records the outcome either way."""
    c = policy.copy_config(name)
    url = str(c.url).rstrip("/")
    same_endpoint = not url.startswith("s3://") or c.endpoint_url == policy.repository.endpoint_url
    if url == str(policy.repository.url).rstrip("/") and same_endpoint:
        raise ConfigError(
            f"copies.{name}.url is the primary repository itself ({c.url})",
            hint="a copy protects only in another place: another bucket, account or region",
        )
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
    error: str | None = None  # why the copy could not be read
    last_copy: str | None = None  # when the last copy run (lifeboat copy, daemon) ended
    last_copy_outcome: str | None = None
    last_copy_error: str | None = None

    @property
    def breach(self) -> bool:
        """An unreadable copy protects nothing: it breaches as surely as a stale one."""
        return self.lag_s is None or self.lag_s > self.copy_rpo_s

    def describe(self) -> str:
        """One line for `status`."""
        lag = "unreadable" if self.lag_s is None else f"lag {self.lag_s:.0f}s"
        line = f"copy {self.name} ({self.url}): {lag} / copy_rpo {self.copy_rpo_s:.0f}s"
        if self.missing_snapshots:
            line += f", {self.missing_snapshots} snapshot(s) missing, oldest {self.oldest_missing}"
        if self.error:
            line += f" ({self.error})"
        if self.last_copy_outcome == "failed":
            line += f"; last copy FAILED {self.last_copy}: {self.last_copy_error}"
        elif self.last_copy:
            line += f"; last copy {self.last_copy}"
        else:
            line += "; never copied"
        return line + ("; BREACH" if self.breach else "; ok")


def copy_job(policy: Policy, name: str) -> Callable[[], int]:
    """The daemon's copy job: bytes copied; a failure raises, so the daemon retries and alerts."""

    def run() -> int:
        return run_copy(policy, name).bytes

    return run


def _last_copies(policy: Policy) -> dict[str, dict[str, Any]]:
    from lifeboat.ops.status import audit_entries

    last: dict[str, dict[str, Any]] = {}
    for entry in audit_entries(policy.state_dir):
        if entry.get("operation") == "copy":
            last[str(entry.get("details", {}).get("copy"))] = entry
    return last


def copy_states(policy: Policy, primary_snapshots: list[Any]) -> list[CopyState]:
    now = clock.now()
    last_runs = _last_copies(policy)
    states = []
    for name, c in sorted(policy.copies.items()):
        last = last_runs.get(name, {})
        runs = {
            "last_copy": last.get("time", "")[:19] or None,
            "last_copy_outcome": last.get("outcome"),
            "last_copy_error": last.get("details", {}).get("error"),
        }
        rpo = c.copy_rpo.total_seconds()
        try:
            target = copy_storage(policy, name)
            try:
                lag: CopyLag = copy_lag(primary_snapshots, target, now)
            finally:
                target.close()
        except StorageError as exc:
            # printed by status: no credentials of an endpoint
            states.append(CopyState(name, str(c.url), rpo, None, 0, None, redact(exc.message), **runs))
            continue
        oldest = lag.oldest_missing
        when = f"{oldest.asset} @ {oldest.time.isoformat(timespec='seconds')}" if oldest else None
        states.append(CopyState(name, str(c.url), rpo, lag.seconds, len(lag.missing), when, **runs))
    return states
