"""The restore service: open the repository once (the primary, or a copy when the primary
cannot be reached), pick the snapshot, restore through the asset's kind, audit, close."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime

from lifeboat import runtime
from lifeboat.assets.kind import RestoreRequest, RestoreResult, RestoreRun
from lifeboat.assets.registry import kind_of
from lifeboat.crypto.credentials import Credentials
from lifeboat.errors import ConfigError, LifeboatError, NotFoundError, StorageError
from lifeboat.policy import Policy
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.redact import redact
from lifeboat.repo import Repository
from lifeboat.services.session import Session, failed_before_opening, needs_escrow

Notify = Callable[[str], None]


@dataclass(frozen=True)
class RestoreOutcome:
    """A finished restore and where it read from."""

    result: RestoreResult
    repository: str | None  # the [copies.NAME] restored from; None: the primary
    repository_url: str
    primary_unreachable: str | None = None  # why the primary was skipped

    def to_json(self) -> dict[str, object]:
        """The `lifeboat restore --json` document."""
        data: dict[str, object] = self.result.to_json()
        if self.repository:
            data |= {"repository": self.repository, "repository_url": self.repository_url}
        if self.primary_unreachable is not None:
            data["primary_unreachable"] = self.primary_unreachable
        return data


def perform(
    policy: Policy, repo: Repository, request: RestoreRequest, progress: ProgressSink = NO_PROGRESS
) -> RestoreResult:
    """Restore one asset from an open repository (no audit: the caller's operation records it)."""
    spec = policy.asset(request.asset)
    kind = kind_of(spec)
    kind.validate(spec, request)
    snapshot = (
        None
        if kind.chooses_snapshot
        else repo.find_snapshot(spec.name, snapshot_id=request.snapshot_id, at=request.at)
    )
    return kind.restore(RestoreRun(policy, spec, repo, request, snapshot, progress))


def refuse_future_time(policy: Policy, repo: Repository, asset: str, when: datetime | None) -> None:
    """A time in the future would quietly mean "the latest": refuse it and say what is."""
    if when is None or when <= datetime.now(UTC):
        return
    from lifeboat.ops.status import asset_status
    from lifeboat.ops.status_view import StatusView

    statuses = asset_status(StatusView.of(policy), repo)
    newest = next((s.last_backup for s in statuses if s.asset == asset), None)
    raise ConfigError(
        f"--at {when.isoformat(timespec='seconds')} is in the future; the newest restorable time "
        f"of {asset} is {newest or 'none (no backup yet)'}",
        hint="give a time in the past, or --latest (postgres) or no target for the newest state",
    )


def restore(
    policy: Policy,
    creds: Credentials,
    request: RestoreRequest,
    *,
    chosen: str | None = None,
    progress: AbstractContextManager[ProgressSink] | None = None,
    notify: Notify = lambda _: None,
) -> RestoreOutcome:
    """Restore one asset; the audit log records it, failed or not. `chosen`: the copy the
    policy already reads from (`--repository`); `notify` hears about a copy fallback."""
    # like `session.reading`, but the repository may be a copy when the primary is down
    try:
        policy, repo, fallback = open_repository(policy, chosen, creds, request.asset, notify)
    except LifeboatError as exc:  # no key, storage down: a restore that never began is history too
        failed_before_opening(policy, "restore", exc, asset=request.asset, target=str(request.target))
        raise
    source = chosen or (fallback[0] if fallback else None)
    where = {"repository": source} if source else {}
    try:
        session = Session(policy, repo, runtime.audit_log(policy, repo))
        try:
            refuse_future_time(policy, repo, request.asset, request.at)
            with progress or nullcontext(NO_PROGRESS) as bar:
                result = perform(policy, repo, request, bar)
        except LifeboatError as exc:
            session.record(
                "restore",
                asset=request.asset,
                outcome="failed",
                target=str(request.target),
                error=exc.message,  # the audit log redacts details
                **where,
            )
            raise
        session.record(
            "restore",
            asset=request.asset,
            target=str(request.target),
            snapshot=result.snapshot,
            outcome="ok" if result.ok else "failed",
            **where,
        )
    finally:
        repo.storage.close()
    return RestoreOutcome(result, source, str(policy.repository.url), fallback[1] if fallback else None)


def open_repository(
    policy: Policy, chosen: str | None, creds: Credentials, asset: str, notify: Notify
) -> tuple[Policy, Repository, tuple[str, str] | None]:
    """The repository to restore from: the primary, or when it cannot be reached (an error
    that is not "not found": a missing snapshot is missing everywhere) the first copy that
    opens. Returns the policy reading from it, the repository, and (copy, why) on fallback."""
    purpose = f"restore {asset}"
    try:
        return (
            policy,
            runtime.open_for_read(
                policy, creds, purpose=purpose, asset=asset, needs_escrow=needs_escrow(policy, asset)
            ),
            None,
        )
    except StorageError as exc:
        if chosen is not None or isinstance(exc, NotFoundError) or not policy.copies:
            raise
        primary_error = exc
    for name in sorted(policy.copies):
        candidate = policy.reading_from(name)
        notify(
            f"lifeboat: primary repository unreachable ({primary_error.message}); "
            f"trying copy {name!r} ({candidate.repository.url})"
        )
        try:
            repo = runtime.open_for_read(
                candidate,
                creds,
                purpose=f"{purpose} from copy {name}",
                asset=asset,
                needs_escrow=needs_escrow(policy, asset),
            )
        except (StorageError, ConfigError) as exc:  # ConfigError: nothing copied there yet
            notify(f"lifeboat: copy {name!r} cannot be read either ({redact(exc.message)})")
            continue
        return candidate, repo, (name, primary_error.message)
    raise StorageError(
        f"{primary_error.message}; no copy could be read either",
        hint="check the endpoints of [repository] and [copies.*]",
    )
