"""One opened repository for the length of one operation: storage, keys and audit log
built once, and the storage closed when the operation ends, however it ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifeboat import runtime
from lifeboat.audit import AuditEntry, AuditLog
from lifeboat.crypto.credentials import Credentials
from lifeboat.errors import LifeboatError
from lifeboat.policy import Policy
from lifeboat.repo import Repository


@dataclass
class Session:
    """What a service works with: the policy, the open repository and its audit log."""

    policy: Policy
    repo: Repository
    audit: AuditLog

    def record(
        self, operation: str, *, asset: str | None = None, outcome: str = "ok", **details: Any
    ) -> AuditEntry:
        """Append the operation's audit entry (mirrored into the repository)."""
        return self.audit.append(operation, asset=asset, outcome=outcome, **details)


@contextmanager
def writing(policy: Policy) -> Iterator[Session]:
    """A write-only session (the backup key alone): backups, WAL pushes, lock release."""
    runtime.require_writable_state(policy)
    repo = runtime.open_for_write(policy)
    try:
        yield Session(policy, repo, runtime.audit_log(policy, repo))
    finally:
        repo.storage.close()


@contextmanager
def reading(
    policy: Policy, creds: Credentials, *, purpose: str, asset: str | None = None
) -> Iterator[Session]:
    """A full session (recovery key from a file or custodian shares; the use is audited)."""
    repo = runtime.open_for_read(
        policy, creds, purpose=purpose, asset=asset, needs_escrow=needs_escrow(policy, asset)
    )
    try:
        yield Session(policy, repo, runtime.audit_log(policy, repo))
    finally:
        repo.storage.close()


def failed_before_opening(policy: Policy, operation: str, exc: LifeboatError, **details: Any) -> None:
    """An operation that could not even open the repository (no key, storage down) is
    audited in the local log; its signed copy follows with the next operation that can."""
    try:
        runtime.audit_log(policy).append(operation, outcome="failed", error=exc.message, **details)
    except LifeboatError:
        pass  # an unwritable state directory: the error the caller raises says what matters


def needs_escrow(policy: Policy, asset: str | None) -> bool:
    """Whether reading ``asset`` needs the escrow threshold of shares (its kind says)."""
    from lifeboat.assets.registry import kind_of

    return asset is not None and kind_of(policy.asset(asset)).needs_escrow


def state_path(policy: Policy, *parts: str) -> Path:
    """A path under the state directory (created private)."""
    return runtime.state_dir(policy).joinpath(*parts)
