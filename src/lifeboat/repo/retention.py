"""Retention: which snapshots to keep (restic's keep-* semantics plus a minimum age)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from lifeboat import clock
from lifeboat.errors import LockedError
from lifeboat.repo.format import snapshot_name
from lifeboat.repo.locks import RepoLock
from lifeboat.repo.model import ForgetReport, SnapshotInfo

if TYPE_CHECKING:
    from lifeboat.repo.handle import RepoHandle


@dataclass(frozen=True)
class KeepRules:
    """How many snapshots to keep per period, and the minimum age before any is removed."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    min_days: int = 0

    @property
    def keeps_everything(self) -> bool:
        """True when no rule is set (nothing is forgotten)."""
        return not any((self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly))


_BUCKETS: list[tuple[str, Callable[[datetime], str]]] = [
    ("hourly", lambda t: t.strftime("%Y-%m-%d %H")),
    ("daily", lambda t: t.strftime("%Y-%m-%d")),
    ("weekly", lambda t: "{:04d}-W{:02d}".format(*t.isocalendar()[:2])),
    ("monthly", lambda t: t.strftime("%Y-%m")),
    ("yearly", lambda t: t.strftime("%Y")),
]


def select_keep(snapshots: list[SnapshotInfo], rules: KeepRules, now: datetime) -> dict[str, list[str]]:
    """Snapshot id -> reasons to keep it. Snapshots not in the result may be forgotten.

    For each period rule the newest snapshot of each of the N most recent periods that
    have snapshots is kept. Anything younger than ``min_days`` is kept regardless. A rule
    set with no keep-* counts keeps everything (never delete by accident).
    """
    newest_first = sorted(snapshots, key=lambda s: s.time, reverse=True)
    reasons: dict[str, list[str]] = {}
    if rules.keeps_everything:
        return {s.id: ["no retention rule"] for s in newest_first}
    for snap in newest_first[: rules.last]:
        reasons.setdefault(snap.id, []).append("last")
    for name, bucket_of in _BUCKETS:
        count = getattr(rules, name)
        seen: set[str] = set()
        for snap in newest_first:
            if len(seen) >= count:
                break
            bucket = bucket_of(snap.time.astimezone(UTC))
            if bucket not in seen:
                seen.add(bucket)
                reasons.setdefault(snap.id, []).append(name)
    cutoff = now - timedelta(days=rules.min_days)
    for snap in newest_first:
        if snap.time > cutoff:
            reasons.setdefault(snap.id, []).append(f"younger than {rules.min_days} days")
    return reasons


def forget_snapshots(
    repo: RepoHandle,
    rules: Callable[[str], KeepRules] | KeepRules,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    asset: str | None = None,
) -> ForgetReport:
    """Remove snapshot headers that no rule keeps; locked ones are kept and reported."""
    now = now or clock.now()
    report = ForgetReport()
    with RepoLock(repo.storage, exclusive=True, operation="forget"):
        by_asset: dict[str, list[SnapshotInfo]] = {}
        for snap in repo.snapshots(asset):
            by_asset.setdefault(snap.asset, []).append(snap)
        for name, snaps in sorted(by_asset.items()):
            asset_rules = rules(name) if callable(rules) else rules
            keep = select_keep(snaps, asset_rules, now)
            report.reasons.update(keep)
            for snap in snaps:
                if snap.id in keep:
                    report.kept.append(snap)
                    continue
                if dry_run:
                    report.removed.append(snap)
                    continue
                try:
                    repo.storage.delete(snapshot_name(snap.id))
                    report.removed.append(snap)
                except LockedError:
                    report.locked.append(snap)
    return report
