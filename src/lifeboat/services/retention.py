"""Retention, written once: forget what no rule keeps, expire the WAL no kept backup
needs, prune what nothing references. The CLI (forget, prune) and the daemon call it;
every run leaves an audit entry, failed runs too."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from lifeboat import runtime
from lifeboat.assets.kind import Expiry
from lifeboat.crypto.credentials import Credentials
from lifeboat.errors import ConfigError, LifeboatError
from lifeboat.policy import Policy
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo import Repository
from lifeboat.repo.model import ForgetReport, PruneReport, SnapshotInfo
from lifeboat.repo.repack import RepackOptions
from lifeboat.services.session import Session, failed_before_opening, reading


@dataclass
class ForgetResult:
    """The snapshots forgotten, kept and locked, and the WAL expired with them."""

    report: ForgetReport
    wal: list[Expiry] = field(default_factory=list)
    dry_run: bool = False


@dataclass
class RetentionResult:
    """One full retention run: forget (with WAL expiry), then prune."""

    forget: ForgetResult
    prune: PruneReport


@contextmanager
def _audited(session: Session, operation: str, asset: str | None = None) -> Iterator[None]:
    """A failed run is history too: its audit entry says what failed."""
    try:
        yield
    except LifeboatError as exc:
        session.record(operation, asset=asset, outcome="failed", error=exc.message)
        raise


def forget_in(session: Session, *, asset: str | None = None, dry_run: bool = False) -> ForgetResult:
    """Forget the snapshots no retention rule keeps, then the WAL they alone needed."""
    if asset is not None:
        require_known_asset(session.policy.assets, asset, session.repo.snapshots(asset))
    with _audited(session, "forget", asset):
        report: ForgetReport = session.repo.forget(
            runtime.keep_rules(session.policy), dry_run=dry_run, asset=asset
        )
        wal: list[Expiry] = expire_data(session.policy, session.repo, asset=asset, dry_run=dry_run)
    session.record(
        "forget",
        asset=asset,
        removed=[s.id for s in report.removed],
        locked=[s.id for s in report.locked],
        wal_removed=sum(len(w.removed) for w in wal),
        dry_run=dry_run,
    )
    return ForgetResult(report, wal, dry_run)


def prune_in(
    session: Session,
    *,
    dry_run: bool = False,
    progress: ProgressSink = NO_PROGRESS,
    repack: RepackOptions | None = None,
) -> PruneReport:
    """Remove the data no snapshot or WAL segment references; repack small or mostly
    unused packs (``repack``: None for the defaults)."""
    with _audited(session, "prune"):
        report: PruneReport = session.repo.prune(dry_run=dry_run, progress=progress, repack=repack)
    session.record(
        "prune",
        packs_removed=report.packs_removed,
        bytes_removed=report.bytes_removed,
        packs_repacked=report.packs_repacked,
        locked=len(report.locked_objects),
        dry_run=dry_run,
    )
    return report


def expire_data(
    policy: Policy, repo: Repository, *, asset: str | None = None, dry_run: bool = False
) -> list[Expiry]:
    """After forget: what each asset's kind drops with the forgotten snapshots (WAL older
    than a PostgreSQL asset's oldest remaining base backup)."""
    from lifeboat.assets.registry import kind_of

    expired = [
        kind_of(spec).expire(repo, name, dry_run=dry_run)
        for name, spec in policy.assets.items()
        if asset in (None, name)
    ]
    return [e for e in expired if e is not None]


@contextmanager
def _session(policy: Policy, creds: Credentials, operation: str) -> Iterator[Session]:
    """A reading session; a run that cannot even open the repository (no key, storage
    down) is audited too (services/session.failed_before_opening)."""
    opened = False
    try:
        with reading(policy, creds, purpose=operation) as session:
            opened = True
            yield session
    except LifeboatError as exc:
        if not opened:
            failed_before_opening(policy, operation, exc)
        raise


def forget(
    policy: Policy, creds: Credentials, *, asset: str | None = None, dry_run: bool = False
) -> ForgetResult:
    """`lifeboat forget`: apply the retention rules (needs the recovery key)."""
    with _session(policy, creds, "forget") as session:
        return forget_in(session, asset=asset, dry_run=dry_run)


def prune(
    policy: Policy, creds: Credentials, *, dry_run: bool = False, repack: RepackOptions | None = None
) -> PruneReport:
    """`lifeboat prune`: remove unreferenced data and repack (needs the recovery key)."""
    with _session(policy, creds, "prune") as session:
        return prune_in(session, dry_run=dry_run, repack=repack)


def retention(policy: Policy, creds: Credentials) -> RetentionResult:
    """The daemon's retention job: forget, expire WAL and prune in one session."""
    with _session(policy, creds, "retention") as session:
        forgotten = forget_in(session)
        return RetentionResult(forgotten, prune_in(session))


def require_known_asset(known: Collection[str], asset: str | None, snaps: list[SnapshotInfo]) -> None:
    """A mistyped --asset would list or forget nothing and say so as if all were well; an
    asset gone from the policy (``known``: its assets) still counts while the repository
    holds its snapshots."""
    if asset is not None and asset not in known and not snaps:
        raise ConfigError.unknown_asset(asset, known)
