"""Run a drill: restore each asset into isolated staging, verify, measure, and judge.

RTO = wall time from the start of the restore to verified, usable service (per asset
and for the whole drill). Achieved RPO = what the restore lacks compared with the source
at the reference "disaster" time (see drills/rpo.py): 0 when nothing was lost; the
method used is recorded per asset in ``rpo_methods``.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from lifeboat import __version__
from lifeboat.assets.postgres.cluster import PgCluster, find_pg_bin, free_port
from lifeboat.assets.postgres.wal import namespace as wal_namespace
from lifeboat.drills.rpo import Rpo, capture_source, files_rpo, objects_rpo, pg_rpo
from lifeboat.errors import LifeboatError
from lifeboat.repo import Repository

Log = Callable[[str], None]
SCENARIO_KINDS = {
    "pg-pitr": {"postgres"},
    "objects-restore": {"objects"},
    "keys-recovery": {"keys"},
    "full-outage": {"postgres", "objects", "keys", "files"},
}


@dataclass
class Step:
    name: str
    asset: str
    started: str
    finished: str
    seconds: float
    outcome: str
    detail: str = ""


@dataclass
class Check:
    name: str
    asset: str
    ok: bool
    detail: str


@dataclass
class DrillRun:
    drill: str
    scenario: str
    reference_time: str
    started: str = ""
    finished: str = ""
    steps: list[Step] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    targets: dict[str, dict[str, float]] = field(default_factory=dict)
    achieved: dict[str, dict[str, float | None]] = field(default_factory=dict)
    recovery_points: dict[str, str | None] = field(default_factory=dict)
    rpo_methods: dict[str, str] = field(default_factory=dict)  # how each achieved RPO was measured
    verdict: str = "fail"
    reasons: list[str] = field(default_factory=list)
    staging: str = ""
    kept: bool = False
    tool_version: str = __version__
    host: str = field(default_factory=socket.gethostname)
    logs: dict[str, str] = field(default_factory=dict)
    total_rto_s: float = 0.0
    repository: str | None = None  # the [copies.NAME] restored from; None: the primary


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _parse_pg_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class DrillRunner:
    def __init__(
        self,
        policy: Any,
        name: str,
        repo: Repository,
        *,
        at: datetime | None = None,
        staging_root: Path | None = None,
        log: Log = lambda _: None,
    ) -> None:
        self.policy = policy
        self.name = name
        self.drill = policy.drills[name]
        self.repo = repo
        self.at = at  # the recovery point asked for; None: the newest data there is
        self.reference = at or datetime.now(UTC)  # the simulated disaster
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.staging = (staging_root or policy.state_dir / "drills") / f"{name}-{stamp}"
        self.log = log
        self.run = DrillRun(
            name, self.drill.scenario, self.reference.isoformat(timespec="seconds"), staging=str(self.staging)
        )
        self.pg_targets: dict[str, tuple[Path, int]] = {}
        self.object_targets: dict[str, Path] = {}
        self.sources: dict[str, Any] = {}  # each source's state when the outage is declared

    def assets(self) -> list[Any]:
        kinds = SCENARIO_KINDS[self.drill.scenario]
        names = self.drill.assets or list(self.policy.assets)
        return [self.policy.asset(n) for n in names if self.policy.asset(n).kind in kinds]

    def execute(self) -> DrillRun:
        self.run.started = _now()
        self.staging.mkdir(parents=True, exist_ok=True)
        drill_started = time.monotonic()
        point_in_time = self.at
        # Before anything is restored: what each source holds at the reference time.
        self.sources = {asset.name: capture_source(asset, self.at) for asset in self.assets()}
        for asset in self.assets():
            cls = self.policy.classes[asset.class_]
            self.run.targets[asset.name] = {
                "rpo_s": cls.rpo.total_seconds(),
                "rto_s": cls.rto.total_seconds(),
            }
            self.log(f"restoring {asset.name} ({asset.kind}) into staging")
            started, t0 = _now(), time.monotonic()
            try:
                recovered, detail, rpo = self._restore(asset, point_in_time)
                outcome = "ok"
            except LifeboatError as exc:
                recovered, detail, outcome = None, exc.message, "failed"
                rpo = Rpo(None, "the restore failed")
                self.run.checks.append(Check("restore", asset.name, False, exc.message))
            seconds = round(time.monotonic() - t0, 3)
            self.run.steps.append(
                Step(f"restore {asset.name}", asset.name, started, _now(), seconds, outcome, detail)
            )
            self.run.achieved[asset.name] = {"rpo_s": rpo.rpo_s, "rto_s": seconds}
            self.run.rpo_methods[asset.name] = rpo.method
            self.run.recovery_points[asset.name] = recovered.isoformat() if recovered else None
        self._cross_checks()
        self.run.total_rto_s = round(time.monotonic() - drill_started, 3)
        self._judge()
        self.run.finished = _now()
        return self.run

    # -- per asset ------------------------------------------------------------------------

    def _restore(self, asset: Any, at: datetime | None) -> tuple[datetime | None, str, Rpo]:
        from lifeboat.assets.registry import restore_asset

        target = self.staging / asset.name
        options: dict[str, Any] = {"target": str(target), "at": at, "snapshot_id": None, "force": False}
        if asset.kind == "postgres":
            port = free_port()
            options.update(start=True, port=port, archive=False, latest=at is None)
            archive_before = set(self.repo.list_ref_names(wal_namespace(asset.name)))
            result = restore_asset(self.policy, asset, self.repo, options)
            self.pg_targets[asset.name] = (target, port)
            self._check_archive_untouched(asset.name, target, port, archive_before)
            log_path = target.parent / f"{target.name}.log"
            if log_path.exists():
                self.run.logs[f"{asset.name}-postgres"] = log_path.read_text(errors="replace")
            for c in result.get("checks", []):
                self.run.checks.append(Check(c["name"], asset.name, c["ok"], c["detail"]))
            # no transaction replayed after the base backup: it is the newest data held
            recovered = _parse_pg_time(result.get("recovered_to")) or self._snapshot_time(asset, result)
            rpo = pg_rpo(
                reference=self.reference,
                at=at,
                source=self.sources.get(asset.name),
                target=target,
                recovered=recovered,
                pgdata=asset.pgdata,
                pg_bin=find_pg_bin(asset.pg_bin),
                user=PgCluster(target, port, target.parent).user,
            )
            return recovered, "; ".join(result.get("summary", [])[:2]), rpo
        if asset.kind == "objects":
            options["target"] = f"dir://{target}"
            options["at"] = None
            info = self.repo.find_snapshot(asset.name, at=at)
            options["snapshot_id"] = info.id
            result = restore_asset(self.policy, asset, self.repo, options)
            self.object_targets[asset.name] = target
            self.run.checks.append(
                Check(
                    "object checksums",
                    asset.name,
                    bool(result["ok"]),
                    f"{result['restored']} objects verified, {len(result['failed'])} failed",
                )
            )
            rpo = objects_rpo(self.reference, self.sources.get(asset.name), self._entries(info), info.time)
            return info.time, result["summary"][0], rpo
        if asset.kind == "keys":
            info = self.repo.find_snapshot(asset.name, at=at)
            options["snapshot_id"] = info.id
            result = restore_asset(self.policy, asset, self.repo, options)
            matched = sum(1 for k in result["keys"] if k["match"])
            self.run.checks.append(
                Check(
                    "key fingerprints",
                    asset.name,
                    bool(result["ok"]),
                    f"{matched} of {len(result['keys'])} fingerprints match",
                )
            )
            rpo = files_rpo(self.reference, self.sources.get(asset.name), self._entries(info), info.time)
            return info.time, result["summary"][0], rpo
        from lifeboat.assets.files import restore_snapshot

        info = self.repo.find_snapshot(asset.name, at=at)
        stats = restore_snapshot(self.repo, info, target)
        self.run.checks.append(Check("file checksums", asset.name, True, f"{stats.verified} files verified"))
        rpo = files_rpo(self.reference, self.sources.get(asset.name), self._entries(info), info.time)
        return info.time, f"{stats.files} files restored", rpo

    def _snapshot_time(self, asset: Any, result: dict[str, Any]) -> datetime | None:
        return (
            self.repo.find_snapshot(asset.name, snapshot_id=result["snapshot"]).time
            if result.get("snapshot")
            else None
        )

    def _entries(self, info: Any) -> list[Any]:
        return list(self.repo.reader(info).entries())

    def _check_archive_untouched(self, asset: str, target: Path, port: int, before: set[str]) -> None:
        """A staging cluster must never write into production's WAL archive: its timeline
        would become a branch a later restore could follow. Provoke archiving (a segment
        switch) and compare the archive's names with those before the restore."""
        from lifeboat.assets.postgres.backup import connect
        from lifeboat.assets.postgres.timelines import added_by_branch

        cluster = PgCluster(target, port, target.parent / f".{target.name}.sock", find_pg_bin())
        try:
            with connect(cluster.dsn) as conn:
                row = conn.execute("select timeline_id from pg_control_checkpoint()").fetchone()
                tli = int(row[0]) if row else 1
                mode = conn.execute("select current_setting('archive_mode')").fetchone()
                conn.execute("select pg_switch_wal()")
                conn.execute("checkpoint")
        except LifeboatError as exc:
            self.run.checks.append(Check("archive untouched", asset, False, exc.message))
            return
        except psycopg.Error as exc:
            self.run.checks.append(Check("archive untouched", asset, False, str(exc).strip()[:200]))
            return
        added = added_by_branch(before, set(self.repo.list_ref_names(wal_namespace(asset))), tli)
        archiving = mode is not None and mode[0] != "off"
        if added:
            detail = (
                f"the staging cluster (timeline {tli}) added {', '.join(added[:5])} to the WAL archive: "
                "restore drills with archiving off and remove these files from the asset"
            )
        elif archiving:
            detail = f"archive_mode is {mode[0] if mode else '?'} in the staging cluster: it could archive"
        else:
            detail = f"archiving off; the staging cluster (timeline {tli}) added nothing to the WAL archive"
        self.run.checks.append(Check("archive untouched", asset, not added and not archiving, detail))

    # -- across assets ------------------------------------------------------------------------

    def _cross_checks(self) -> None:
        from lifeboat.assets.objects.source import key_to_path
        from lifeboat.assets.postgres.backup import connect

        for cc in self.drill.cross_checks:
            name = f"{cc.database} rows -> {cc.objects} objects"
            if cc.database not in self.pg_targets or cc.objects not in self.object_targets:
                self.run.checks.append(
                    Check(name, cc.database, False, "both assets must be restored in this drill")
                )
                continue
            target, port = self.pg_targets[cc.database]
            user = PgCluster(target, port, target.parent).user or "postgres"
            database = cc.dbname or "postgres"
            dsn = make_conninfo(
                host=f"{target.parent}/.{target.name}.sock", port=port, user=user, dbname=database
            )
            root = self.object_targets[cc.objects]
            try:
                with connect(dsn) as conn:
                    rows = conn.execute(cc.query).fetchall()
            except Exception as exc:
                self.run.checks.append(
                    Check(name, cc.database, False, f"query failed: {str(exc).splitlines()[0]}")
                )
                continue
            missing, mismatched = [], []
            for row in rows:
                path = root / key_to_path(str(row[0]))
                if not path.is_file():
                    missing.append(str(row[0]))
                elif len(row) > 1 and row[1] and hashlib.sha256(path.read_bytes()).hexdigest() != row[1]:
                    mismatched.append(str(row[0]))
            ok = not missing and not mismatched
            detail = f"{len(rows)} referenced objects checked"
            if missing:
                detail += f"; missing: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")
            if mismatched:
                detail += f"; checksum mismatch: {', '.join(mismatched[:5])}"
            self.run.checks.append(Check(name, cc.database, ok, detail))

    def _judge(self) -> None:
        reasons = [f"check failed: {c.asset} {c.name}: {c.detail}" for c in self.run.checks if not c.ok]
        for asset, achieved in self.run.achieved.items():
            target = self.run.targets[asset]
            if achieved["rto_s"] is not None and achieved["rto_s"] > target["rto_s"]:
                reasons.append(
                    f"{asset}: RTO {achieved['rto_s']:.0f}s exceeds the target {target['rto_s']:.0f}s"
                )
            if achieved["rpo_s"] is None:
                reasons.append(f"{asset}: no recovery point could be established")
            elif achieved["rpo_s"] > target["rpo_s"]:
                bound = self.run.rpo_methods.get(asset, "").startswith("upper bound")
                reasons.append(
                    f"{asset}: RPO {'up to ' if bound else ''}{achieved['rpo_s']:.0f}s exceeds the target "
                    f"{target['rpo_s']:.0f}s ({self.run.rpo_methods.get(asset, '')})"
                )
        self.run.reasons = reasons
        self.run.verdict = "pass" if not reasons else "fail"

    def cleanup(self, keep: bool) -> None:
        # a failed drill's staging is removed too (a full restore each time fills the disk:
        # ~175 MB per demo drill); its evidence says what failed, --keep keeps it to inspect
        self.run.kept = keep
        for target, _ in self.pg_targets.values():
            PgCluster(target, 0, target.parent, find_pg_bin()).stop("fast")
        if not self.run.kept:
            shutil.rmtree(self.staging, ignore_errors=True)
