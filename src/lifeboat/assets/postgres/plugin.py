"""The `postgres` kind's plug-in: base backups plus WAL, point-in-time restores, drills,
the daemon's WAL jobs, status from the archive, and policy findings about archiving.

Only light imports at module level: `wal push` loads the registry, never psycopg."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifeboat.assets.kind import (
    AssetKind,
    BackupRequest,
    BackupResult,
    DrillContext,
    DrillRestore,
    Expiry,
    ExtraJob,
    Finding,
    Note,
    PgRecovery,
    RestoreCheck,
    RestoredService,
    RestoreRequest,
    RestoreResult,
    RestoreRun,
    StatusExtras,
    StatusProbe,
    StatusQuery,
    Streamer,
)
from lifeboat.errors import LifeboatError

if TYPE_CHECKING:
    from lifeboat.assets.kind import AssetSpec
    from lifeboat.assets.postgres.model import PostgresAsset
    from lifeboat.assets.postgres.restore import PgRestoreResult
    from lifeboat.policy import Policy
    from lifeboat.repo import Repository

WAL_DRAIN_EVERY = timedelta(seconds=10)


def _spec(asset: AssetSpec) -> PostgresAsset:
    # imported on use: `status` under a policy it validated before loads no pydantic
    from lifeboat.assets.postgres.model import PostgresAsset

    return PostgresAsset.of(asset)


def parse_pg_time(text: str | None) -> datetime | None:
    """A timestamp from the server log ("2026-11-24 14:05:00.1+00"); None if unreadable."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def running_service(target: Path, port: int, pg_bin: Path | None) -> RestoredService:
    """How to reach, query and stop a cluster restored into `target` and started on `port`."""
    from psycopg.conninfo import make_conninfo

    from lifeboat.assets.postgres.cluster import PgCluster, find_pg_bin
    from lifeboat.assets.postgres.restore import socket_dir_of

    cluster = PgCluster(target, port, socket_dir_of(target), find_pg_bin(pg_bin))
    user = cluster.user or "postgres"

    def query(sql: str, database: str | None) -> list[tuple[Any, ...]]:
        from lifeboat.assets.postgres.connection import connect

        dsn = make_conninfo(host=str(cluster.socket_dir), port=port, user=user, dbname=database or "postgres")
        with connect(dsn) as conn:
            return list(conn.execute(sql).fetchall())

    return RestoredService(cluster.dsn, lambda: cluster.stop("fast"), query)


def _result(done: PgRestoreResult, pg_bin: Path | None) -> RestoreResult:
    service = running_service(Path(done.target), done.port, pg_bin) if done.started and done.port else None
    return RestoreResult(
        done.ok,
        done.asset,
        done.snapshot,
        done.target,
        list(done.summary),
        done.to_dict(),
        [RestoreCheck(c.name, c.ok, c.detail) for c in done.checks],
        recovered_to=parse_pg_time(done.recovered_to),
        service=service,
    )


class PostgresKind(AssetKind):
    """PostgreSQL clusters: base backups, WAL archiving and streaming, PITR."""

    name = "postgres"
    restore_options = frozenset(
        {"lsn", "xid", "name", "latest", "port", "start", "archive", "timeline", "standby"}
    )
    drill_scenarios = frozenset({"pg-pitr", "full-outage"})
    chooses_snapshot = True  # the base backup on the followed timeline
    archives_wal = True
    status_probe_imports = ("lifeboat.assets.postgres.configure",)  # psycopg

    def backup(self, request: BackupRequest) -> BackupResult:
        """A base backup (the WAL is archived separately): the data directory's files when
        it is on this host, else streamed over the replication protocol."""
        from lifeboat.assets.postgres.backup import backup_postgres, local_pgdata
        from lifeboat.assets.postgres.pagecheck import bad_pages_of

        asset = _spec(request.asset)
        if local_pgdata(asset) is None:
            from lifeboat.assets.postgres.basebackup import stream_basebackup

            info = stream_basebackup(asset, request.repo, request.progress)
        else:
            info = backup_postgres(request.policy, asset, request.repo, request.progress)
        pages = bad_pages_of(info.id, info.labels) if "page_checksums" in info.labels else None
        return BackupResult(info, findings=None if pages is None else list[Finding](pages))

    def restore(self, run: RestoreRun) -> RestoreResult:
        """Restore a base backup with its WAL; with `start`, recover and run the checks."""
        from lifeboat.assets.postgres.restore import restore_postgres

        asset = _spec(run.asset)
        done = restore_postgres(run.policy, asset, run.repo, run.request, run.progress)
        return _result(done, asset.pg_bin)

    def capture_source(self, asset: AssetSpec, at: datetime | None) -> object:
        """The source's WAL position now (a drill to a past time needs none)."""
        from lifeboat.assets.postgres.drill import pg_source_position

        return pg_source_position(_spec(asset).dsn) if at is None else None

    def drill(self, ctx: DrillContext) -> DrillRestore:
        """Restore into staging with archiving off, start it, check it, measure the RPO."""
        from lifeboat.assets.postgres.cluster import PgCluster, find_pg_bin, free_port
        from lifeboat.assets.postgres.drill import archive_untouched, pg_rpo
        from lifeboat.assets.postgres.wal import namespace

        asset = _spec(ctx.asset)
        target, port = ctx.staging, free_port()
        recovery = PgRecovery(start=True, port=port, archive=False)
        archive_before = set(ctx.repo.list_ref_names(namespace(asset.name)))
        result = ctx.restore(RestoreRequest(asset.name, str(target), at=ctx.at, postgres=recovery))
        checks = [archive_untouched(ctx.repo, asset.name, result, archive_before)]
        logs = {}
        log_path = target.parent / f"{target.name}.log"
        if log_path.exists():
            logs[f"{asset.name}-postgres"] = log_path.read_text(errors="replace")
        checks += result.checks
        # no transaction replayed after the base backup: it is the newest data held
        recovered = result.recovered_to or (
            ctx.repo.find_snapshot(asset.name, snapshot_id=result.snapshot).time if result.snapshot else None
        )
        rpo = pg_rpo(
            reference=ctx.reference,
            at=ctx.at,
            source=ctx.source,
            target=target,
            recovered=recovered,
            pgdata=asset.pgdata,
            pg_bin=find_pg_bin(asset.pg_bin),
            user=PgCluster(target, port, target.parent).user,
        )
        detail = "; ".join(result.summary[:2])
        return DrillRestore(recovered, detail, rpo, checks, logs, service=result.service)

    def daemon_jobs(self, policy: Policy, name: str, open_repo: Callable[[], Repository]) -> list[ExtraJob]:
        """Drain the async WAL spool; verify the archive's continuity."""
        asset = _spec(policy.asset(name))
        jobs = []
        if asset.wal_async:
            jobs.append(ExtraJob(f"wal-drain:{name}", _wal_drain(policy, name, open_repo), WAL_DRAIN_EVERY))
        jobs.append(ExtraJob(f"wal-verify:{name}", _wal_verify(name, open_repo), policy.daemon.check_every))
        return jobs

    def streams(self, asset: AssetSpec) -> bool:
        """`stream = true`: pg_receivewal runs beside the server."""
        return _spec(asset).stream

    def streamer(
        self, policy: Policy, name: str, open_repo: Callable[[], Repository], log: Callable[[str], None]
    ) -> Streamer:
        """pg_receivewal into the repository's stream namespace."""
        from lifeboat.assets.postgres.stream import WalStreamer

        spec = _spec(policy.asset(name))
        return WalStreamer(
            name,
            spec.dsn,
            Path(policy.state_dir) / "wal-stream" / name,
            open_repo,
            pg_bin=spec.pg_bin,
            log=log,
        )

    def expire(self, repo: Repository, name: str, *, dry_run: bool = False) -> Expiry | None:
        """WAL older than the oldest remaining base backup."""
        from lifeboat.assets.postgres.wal import expire_wal

        return expire_wal(repo, name, dry_run=dry_run)

    def status(self, query: StatusQuery) -> StatusExtras:
        """Bad pages, archived and streamed WAL, divergent branches, a failing archiver."""
        from lifeboat.assets.postgres.status import status_extras

        return status_extras(query)

    def status_settings(self, asset: AssetSpec) -> Mapping[str, Any]:
        """The server status asks (dsn) and whether WAL is streamed as well as archived."""
        spec = _spec(asset)
        return {"dsn": spec.dsn, "stream": spec.stream}

    def status_probe(self, settings: Mapping[str, Any]) -> StatusProbe | None:
        """pg_stat_archiver's verdict (``status.archiver_probe``), asked of the server."""
        from lifeboat.assets.postgres.status import archiver_probe

        dsn = str(settings["dsn"])
        return StatusProbe(f"postgres archiver {dsn}", functools.partial(archiver_probe, dsn))

    def host(self, asset: AssetSpec) -> str | None:
        """The primary's host from the dsn (None for a socket: this machine)."""
        from lifeboat.assets.postgres.standby import dsn_remote_host

        return dsn_remote_host(_spec(asset).dsn)

    def feasibility(self, policy: Policy, name: str, asset: AssetSpec) -> list[Note] | None:
        """A sub-minute RPO needs streaming; the schedule does not bound the RPO (WAL does)."""
        from lifeboat.policy import format_duration

        rpo = policy.classes[asset.class_].rpo
        if rpo < timedelta(minutes=1) and not _spec(asset).stream:
            return [
                Note(
                    "warn",
                    f"RPO {format_duration(rpo)} needs WAL streaming "
                    "(stream = true); archive_command alone ships whole segments",
                )
            ]
        return []

    def online_findings(self, policy: Policy, name: str, asset: AssetSpec) -> list[Note]:
        """The server's settings, a real WAL push as its OS user, and pg_stat_archiver."""
        from lifeboat.assets.postgres.configure import archive_failure, probe_as_server_user, server_findings

        spec = _spec(asset)
        found = [Note("warn", message) for message in server_findings(policy, spec)]
        if not Path(policy.repository.keyfile).exists():
            return found  # not initialised yet: nothing to push into
        user, problem = probe_as_server_user(Path(policy.path).absolute(), spec)
        if problem is not None:
            found.append(Note("error", f"a WAL push as {user} would fail: {problem}"))
        try:
            failing = archive_failure(spec.dsn)
        except LifeboatError as exc:  # pg_stat_archiver refused to the dsn's role: a finding
            failing = exc.message
        if failing is not None:
            found.append(Note("error", failing))
        return found

    def data_owner_path(self, asset: AssetSpec) -> Path | None:
        """The data directory: its owner should own the repository too."""
        return _spec(asset).pgdata

    def archive_backlog_dir(self, asset: AssetSpec) -> Path | None:
        """The data directory: pg_wal/archive_status lists the segments ready to archive."""
        return _spec(asset).pgdata


def _wal_drain(policy: Policy, name: str, open_repo: Callable[[], Repository]) -> Callable[[], int]:
    def run() -> int:
        from lifeboat.assets.postgres.wal import drain_spool

        pushed: int = drain_spool(open_repo(), name, policy.state_dir / "wal-spool" / name)
        return pushed

    return run


def _wal_verify(name: str, open_repo: Callable[[], Repository]) -> Callable[[], int]:
    def run() -> int:
        from lifeboat.assets.postgres.wal import namespace, verify_continuity

        repo = open_repo()
        report = verify_continuity(repo.list_ref_names(namespace(name)), repo.snapshots(name), name)
        if not report.ok:
            missing = report.missing_start or report.gaps[0].missing
            raise LifeboatError(f"WAL gap in {name}: segment {missing} is missing from the archive")
        return 0

    return run


PLUGIN = PostgresKind()
