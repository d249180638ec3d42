"""Verify the repository: its structure, and with read_data every stored byte (or part
N/T of the packs). The CLI and the daemon's check jobs call it; every run is audited."""

from __future__ import annotations

from contextlib import ExitStack

from lifeboat.crypto.credentials import Credentials
from lifeboat.errors import LifeboatError
from lifeboat.policy import Policy
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo.model import CheckReport
from lifeboat.services.backup import ProgressFactory, no_progress
from lifeboat.services.session import Session, failed_before_opening, reading, writing


def check_in(
    session: Session,
    *,
    read_data: bool = False,
    subset: str | None = None,
    hash_only: bool = False,
    progress: ProgressSink = NO_PROGRESS,
) -> CheckReport:
    """Check through an open session and audit the outcome (problems found: failed)."""
    read_data = read_data or subset is not None
    try:
        report: CheckReport = session.repo.check(
            read_data=read_data, progress=progress, subset=subset, hash_only=hash_only
        )
    except LifeboatError as exc:
        session.record("check", outcome="failed", read_data=read_data, subset=subset, error=exc.message)
        raise
    session.record(
        "check",
        outcome="ok" if report.ok else "failed",
        read_data=read_data,
        subset=report.subset,
        problems=len(report.problems),
    )
    return report


def check(
    policy: Policy,
    creds: Credentials,
    *,
    read_data: bool = False,
    subset: str | None = None,
    progress: ProgressFactory = no_progress,
) -> CheckReport:
    """`lifeboat check`: with the recovery key when there is one (every chunk is then
    decrypted), else with the backup key; reading data needs the recovery key."""
    read_data = read_data or subset is not None
    with ExitStack() as stack:
        session: Session | None = None
        if creds.given or read_data or policy.repository.recovery_key:
            purpose = "check --read-data" if read_data else "check"
            try:
                session = stack.enter_context(reading(policy, creds, purpose=purpose))
            except LifeboatError as exc:
                if read_data:
                    failed_before_opening(policy, "check", exc, read_data=True, subset=subset)
                    raise
        if session is None:  # a structure check needs no more than the backup key
            session = stack.enter_context(writing(policy))
        with progress("checking") as bar:
            return check_in(session, read_data=read_data, subset=subset, progress=bar)
