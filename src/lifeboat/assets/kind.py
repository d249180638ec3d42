"""The `AssetKind` plug-in protocol: what every data class (files, postgres, objects, keys)
offers the rest of lifeboat, and the typed requests and results that cross that boundary.

Outside `assets/`, code reaches a kind only through `lifeboat.assets.registry.kind_of`;
it never compares a kind's name. A kind that has nothing to say for a hook keeps the
default (no extra jobs, no findings, no extra status, nothing to expire).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from lifeboat.progress import NO_PROGRESS, ProgressSink

if TYPE_CHECKING:  # the policy models load pydantic: not needed by `wal push`
    from lifeboat.assets.rpo import Rpo
    from lifeboat.policy import AssetBase, Policy
    from lifeboat.repo import Repository, SnapshotInfo

    # an asset's policy table: the kind's own model (`assets/<kind>/model.py`) as the
    # policy holds it; a plug-in narrows it to its model with `isinstance`
    AssetSpec = AssetBase


# -- backup ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupRequest:
    """One backup of one asset into an open (write-only) repository."""

    policy: Policy
    asset: AssetSpec
    repo: Repository
    progress: ProgressSink = NO_PROGRESS


class Finding(Protocol):
    """Damage a backup found in its source and stored as it was (a PostgreSQL page that
    failed its checksum): the snapshot is committed, the operator must hear of it."""

    def describe(self) -> str:
        """One line naming what is damaged and where."""
        ...

    def to_json(self) -> dict[str, Any]:
        """The finding as a JSON record."""
        ...


@dataclass(frozen=True)
class BackupResult:
    """The snapshot a backup committed and what it found damaged in the source."""

    snapshot: SnapshotInfo
    findings: list[Finding] | None = None  # None: the kind does not verify what it reads


# -- restore -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgRecovery:
    """PostgreSQL-only restore settings: the recovery target and how the restored server runs."""

    lsn: str | None = None
    xid: str | None = None
    name: str | None = None
    port: int | None = None
    start: bool = False
    archive: bool = False
    timeline: int | None = None
    standby: bool = False


@dataclass(frozen=True)
class RestoreRequest:
    """What a restore is asked to do; fields a kind does not accept stay at their defaults
    (the CLI refuses them first, see `AssetKind.restore_options`)."""

    asset: str
    target: str | None
    snapshot_id: str | None = None
    at: datetime | None = None
    force: bool = False
    dry_run: bool = False
    in_place: bool = False  # objects: restore the source bucket itself
    yes: bool = False  # objects: the in-place restore is confirmed
    shard: int | None = None  # objects: restore only part `shard` of `shards`
    shards: int | None = None
    postgres: PgRecovery = field(default_factory=PgRecovery)


@dataclass(frozen=True)
class RestoreCheck:
    """One verification a restore ran on what it restored (checksums, SQL checks, amcheck)."""

    name: str
    ok: bool
    detail: str


@dataclass
class RestoreResult:
    """What a restore did: typed fields for callers, `details` for the CLI's JSON output."""

    ok: bool
    asset: str
    snapshot: str | None
    target: str
    summary: list[str]
    details: dict[str, Any]  # JSON values of the kind's own report (the `--json` contract)
    checks: list[RestoreCheck] = field(default_factory=list)
    recovered_to: datetime | None = None  # postgres: the last transaction replayed
    service: RestoredService | None = None  # a restore left running (postgres --start)

    def to_json(self) -> dict[str, Any]:
        """The `lifeboat restore --json` document (key order as the kind reported it)."""
        return dict(self.details)


@dataclass(frozen=True)
class RestoredService:
    """A restored server left running: how to reach it, stop it, and query it."""

    dsn: str
    stop: Callable[[], None]
    query: Callable[[str, str | None], list[tuple[Any, ...]]]  # (sql, database) -> rows


@dataclass(frozen=True)
class RestoreRun:
    """A restore request with what the service resolved for it."""

    policy: Policy
    asset: AssetSpec
    repo: Repository
    request: RestoreRequest
    snapshot: SnapshotInfo | None  # None: the kind chooses its own (see `chooses_snapshot`)
    progress: ProgressSink = NO_PROGRESS


# -- drills ------------------------------------------------------------------------------------


@dataclass
class DrillRestore:
    """One asset's drill step: the restore, what it proves, and how much data it lacks."""

    recovered: datetime | None
    detail: str
    rpo: Rpo
    checks: list[RestoreCheck] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)
    service: RestoredService | None = None  # cross-checks query it (a database)
    locate: Callable[[str], Path] | None = None  # cross-checks find an object key's file


@dataclass(frozen=True)
class DrillContext:
    """What a kind needs to run its drill step: `restore` goes through the restore service."""

    policy: Policy
    asset: AssetSpec
    repo: Repository
    staging: Path  # the asset's own directory inside the drill's staging
    at: datetime | None  # the recovery point asked for; None: the newest data
    reference: datetime  # the simulated disaster
    source: object  # what `capture_source` recorded before anything was restored
    restore: Callable[[RestoreRequest], RestoreResult]


# -- policy check ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    """A kind's finding about one asset for `policy check` ("warn" or "error")."""

    level: Literal["warn", "error"]
    message: str


# -- daemon ------------------------------------------------------------------------------------


@dataclass
class Expiry:
    """What retention dropped for one asset beyond its snapshots (a PostgreSQL asset: the
    WAL older than its oldest kept base backup, numbered below ``before``)."""

    asset: str
    before: str | None = None
    removed: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExtraJob:
    """A periodic daemon job a kind adds for one asset (beside its scheduled backup)."""

    name: str  # e.g. "wal-drain:NAME"
    run: Callable[[], int]
    every: timedelta


class Streamer(Protocol):
    """A long-running companion process (e.g. WAL streaming) the daemon supervises."""

    def run(self, stop: threading.Event) -> object:
        """Run until `stop` is set; raise on a failure the daemon should alert about."""


# -- the protocol ------------------------------------------------------------------------------


class AssetKind:
    """Base of every kind's plug-in: `backup` and `restore` are required, every hook has a
    harmless default."""

    name: str = ""
    # kind-specific `restore` options it accepts (the CLI refuses them for other kinds)
    restore_options: frozenset[str] = frozenset()
    # drill scenarios that restore assets of this kind
    drill_scenarios: frozenset[str] = frozenset({"full-outage"})
    # a restore reading key material needs the escrow threshold, not just a key file
    needs_escrow: bool = False
    # True: the kind picks its own base snapshot (e.g. along a WAL timeline)
    chooses_snapshot: bool = False
    # True: the source ships a write-ahead log the `wal` commands archive
    archives_wal: bool = False
    # the modules ``status_probe``'s question imports (its driver): imported on the asking
    # thread before the probes' threads start (two threads never import a driver for the
    # first time at once), or by the child process one-shot `status` asks in, while the
    # parent reads its policy (``ops/probe_child.py``)
    status_probe_imports: tuple[str, ...] = ()

    def backup(self, request: BackupRequest) -> BackupResult:
        """Capture the asset into one committed snapshot."""
        raise NotImplementedError

    def validate(self, asset: AssetSpec, request: RestoreRequest) -> None:
        """Refuse a restore request before any snapshot is looked up."""

    def restore(self, run: RestoreRun) -> RestoreResult:
        """Restore a snapshot into the request's target and verify it."""
        raise NotImplementedError

    def capture_source(self, asset: AssetSpec, at: datetime | None) -> object:
        """Drills: the source's state at the reference time, read before any restore."""
        return None

    def drill(self, ctx: DrillContext) -> DrillRestore:
        """Drills: restore into staging, verify, and measure the achieved RPO."""
        raise NotImplementedError

    def daemon_jobs(self, policy: Policy, name: str, open_repo: Callable[[], Repository]) -> list[ExtraJob]:
        """Periodic daemon jobs beside the scheduled backup (WAL drain, continuity check)."""
        return []

    def streams(self, asset: AssetSpec) -> bool:
        """Whether the daemon supervises a `streamer` for this asset."""
        return False

    def streamer(
        self, policy: Policy, name: str, open_repo: Callable[[], Repository], log: Callable[[str], None]
    ) -> Streamer:
        """The companion process the daemon keeps running for the asset."""
        raise NotImplementedError

    def expire(self, repo: Repository, name: str, *, dry_run: bool = False) -> Expiry | None:
        """Retention: after `forget`, drop what only the forgotten snapshots needed."""
        return None

    def status(self, query: StatusQuery) -> StatusExtras:
        """Status: data newer than the newest snapshot (WAL, streams), and breaches."""
        return StatusExtras()

    def status_settings(self, asset: AssetSpec) -> Mapping[str, Any]:
        """What this kind's ``status`` and ``status_probe`` read of the asset's table (plain
        JSON values): `status` keeps them with the policy's other targets, encrypted in the
        state dir (`ops/status_view.py`), and runs without validating the policy again."""
        return {}

    def status_probe(self, settings: Mapping[str, Any]) -> StatusProbe | None:
        """A question status asks the asset's live source (a server's own view), whose
        answer ``status`` then finds in ``StatusQuery.probed``; None: none. Every asset's
        probe runs at once, beside the repository reads: during an outage a host that does
        not answer costs one connect timeout, not one per asset behind it. A probe does
        not raise (what it raises stops status): a source out of reach is no answer."""
        return None

    def host(self, asset: AssetSpec) -> str | None:
        """Where the asset lives when the policy does not say (e.g. a dsn's host); None:
        this machine."""
        return None

    def feasibility(self, policy: Policy, name: str, asset: AssetSpec) -> list[Note] | None:
        """Policy check: findings about meeting the RPO; None: the schedule decides."""
        return None

    def online_findings(self, policy: Policy, name: str, asset: AssetSpec) -> list[Note]:
        """Policy check (online): what the running source says about its configuration."""
        return []

    def endpoint(self, asset: AssetSpec) -> tuple[str | None, bool] | None:
        """The asset's own network endpoint and whether plain http is allowed; None: none."""
        return None

    def data_owner_path(self, asset: AssetSpec) -> Path | None:
        """A directory whose owner should own the repository (init as root)."""
        return None

    def archive_backlog_dir(self, asset: AssetSpec) -> Path | None:
        """For a kind that `archives_wal`: the local data directory whose archiver backlog
        (segments ready, not yet archived) the daemon publishes; None: not on this host."""
        return None

    def systemd_streams(self, asset: AssetSpec) -> bool:
        """Whether `schedule export` writes a streaming service for the asset."""
        return self.streams(asset)

    def reachable(self, asset: AssetSpec) -> str | None:
        """Policy check (online): why the asset's own source cannot be seen; None: fine."""
        return None

    def shards(self, asset: AssetSpec) -> int | None:
        """How many shards a sharded backup of the asset uses; None: not shardable."""
        return None


@dataclass(frozen=True)
class StatusProbe:
    """A kind's live question for status: ``ask`` runs on a thread of its own (in the
    asking process, or in a child process of one-shot `status`; it is then pickled, as
    its answer is). ``key`` says
    what it asks (a dsn): one probe a key is out at a time, so a server that took the
    connection and never answers holds one thread, not one more every time the daemon
    refreshes (held in memory only: a dsn may carry a password)."""

    key: str = field(repr=False)
    ask: Callable[[], Any] = field(repr=False)


@dataclass(frozen=True)
class StatusQuery:
    """What a kind's status hook reads: the asset's status settings, its snapshots and the
    audit log."""

    repo: Repository
    name: str
    settings: Mapping[str, Any] = field(repr=False)  # the kind's status_settings (a dsn: its password)
    snapshots: list[SnapshotInfo]  # the asset's, oldest first
    audit: Sequence[dict[str, Any]]
    probed: Any = None  # what the kind's status_probe answered (None without one)
    now: datetime | None = None  # the status's time (None: the clock's)


@dataclass
class StatusExtras:
    """What a kind adds to an asset's status: breaches in the order they are reported."""

    newest: datetime | None = None  # data newer than any snapshot (WAL pushed, streamed)
    breaches: list[str] = field(default_factory=list)
    unrestorable: set[str] = field(default_factory=set)  # ids of snapshots no restore brings back
    divergent: list[dict[str, Any]] = field(default_factory=list)  # WAL branches
    bad_pages: int | None = None
    archive_failure: str | None = None
    archiver_answered: bool | None = None  # the server gave a verdict; None: no archiver
