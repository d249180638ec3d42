"""Remove repository locks left behind by crashed or clock-skewed processes (audited)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lifeboat.policy import Policy
from lifeboat.repo.locks import UnlockReport, storage_age, storage_now, unlock
from lifeboat.services.session import writing


@dataclass
class UnlockResult:
    """The locks removed, kept and refused, and each live lock's age by storage time."""

    report: UnlockReport
    ages: dict[str, float] = field(default_factory=dict)  # live lock name -> seconds


def remove_locks(policy: Policy, *, everything: bool = False) -> UnlockResult:
    """`lifeboat unlock`: stale locks (default), or every lock with ``everything``."""
    with writing(policy) as session:
        report = unlock(session.repo.storage, everything=everything)
        session.record(
            "unlock",
            outcome="ok" if not report.failed else "failed",
            mode="all" if everything else "stale",
            removed=[lock.name for lock in report.removed] + report.leftovers,
            kept=[lock.name for lock in report.live],
            failed=report.failed,
        )
        now = storage_now(session.repo.storage) if report.live else 0.0
        return UnlockResult(report, {lock.name: storage_age(lock, now) for lock in report.live})
