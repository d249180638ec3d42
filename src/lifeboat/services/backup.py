"""Back up assets now: each asset under its timeout, its page-check findings, its audit
entry (failures too). The CLI renders the report; the daemon runs it in a child process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from lifeboat.assets.kind import BackupResult, Finding
from lifeboat.assets.registry import backup_asset
from lifeboat.errors import LifeboatError
from lifeboat.ops.deadline import DeadlineExceeded, deadline
from lifeboat.policy import Policy, format_duration
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo import Repository
from lifeboat.repo.model import PARENT_CACHE_REJECTED, SnapshotInfo
from lifeboat.services.session import Session, writing

ProgressFactory = Callable[[str], AbstractContextManager[ProgressSink]]


@contextmanager
def no_progress(_: str) -> Iterator[ProgressSink]:
    """The progress of a run nobody watches (the daemon's)."""
    yield NO_PROGRESS


@dataclass(frozen=True)
class Failure:
    """Why an asset's backup failed, in a form that crosses a process boundary."""

    message: str
    hint: str | None = None
    exit_code: int = 1
    deadline: bool = False  # stopped by its own timeout

    @classmethod
    def of(cls, exc: LifeboatError) -> Failure:
        """The failure a raised error describes."""
        return cls(exc.message, exc.hint, exc.exit_code, isinstance(exc, DeadlineExceeded))

    def error(self) -> LifeboatError:
        """The error again, for a caller that reports it the way the backup raised it."""
        if self.deadline:
            return DeadlineExceeded(self.message, self.hint, exit_code=self.exit_code)
        return LifeboatError(self.message, self.hint, exit_code=self.exit_code)


@dataclass
class AssetBackup:
    """One asset's outcome: its snapshot and findings, or its failure."""

    asset: str
    snapshot: SnapshotInfo | None = None
    seconds: float = 0.0
    bad_pages: list[Finding] | None = None  # None: the kind does not verify pages
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        """Whether a snapshot was committed."""
        return self.failure is None


@dataclass
class BackupReport:
    """Every asset asked for, in the order asked."""

    assets: list[AssetBackup] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Whether any asset failed."""
        return any(not a.ok for a in self.assets)


def backup(
    policy: Policy,
    assets: Sequence[str] = (),
    *,
    progress: ProgressFactory = no_progress,
    on_result: Callable[[AssetBackup], None] = lambda _: None,
) -> BackupReport:
    """Back up the named assets (default: all), one after the other; a failed asset does
    not stop the others. ``on_result`` sees each outcome as soon as it is known."""
    names = list(assets) or list(policy.assets)
    for name in names:
        policy.asset(name)  # unknown names fail before any work starts
    report = BackupReport()
    with writing(policy) as session:
        for name in names:
            result = _backup_one(session, name, progress)
            report.assets.append(result)
            on_result(result)
    return report


def _backup_one(session: Session, name: str, progress: ProgressFactory) -> AssetBackup:
    started = time.monotonic()
    limit = session.policy.asset(name).timeout
    stop = f"backup of {name} stopped: it ran past its timeout of {format_duration(limit)}" if limit else ""
    try:
        with deadline(limit, stop), progress(f"backup {name}") as bar:
            backed_up = run_backup(session.policy, name, session.repo, bar)
    except LifeboatError as exc:
        session.record("backup", asset=name, outcome="failed", error=exc.message)
        return AssetBackup(name, seconds=time.monotonic() - started, failure=Failure.of(exc))
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (the daemon's deadline): unwound, and said
        session.record("backup", asset=name, outcome="failed", error="interrupted")
        raise
    info, bad_pages = backed_up.snapshot, backed_up.findings
    extra: dict[str, Any] = {"bad_pages": len(bad_pages)} if bad_pages else {}
    if PARENT_CACHE_REJECTED in info.labels:
        extra[PARENT_CACHE_REJECTED] = int(info.labels[PARENT_CACHE_REJECTED])
    session.record(
        "backup", asset=name, snapshot=info.id, bytes=info.stats.bytes, added=info.stats.stored_bytes, **extra
    )
    return AssetBackup(name, info, time.monotonic() - started, bad_pages)


def run_backup(policy: Policy, name: str, repo: Repository, progress: ProgressSink) -> BackupResult:
    """The one call into the asset kinds (the registry decides how the kind backs up)."""
    return backup_asset(policy, name, repo, progress)
