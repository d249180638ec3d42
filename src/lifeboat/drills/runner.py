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
from typing import TYPE_CHECKING, Any

from lifeboat import __version__, clock
from lifeboat.assets.kind import DrillContext, DrillRestore, RestoreRequest, RestoreResult
from lifeboat.assets.registry import kind_of
from lifeboat.audit import default_actor
from lifeboat.drills.rpo import Rpo, capture_source
from lifeboat.errors import LifeboatError
from lifeboat.repo import Repository

if TYPE_CHECKING:
    from lifeboat.assets.kind import AssetSpec
    from lifeboat.policy import DrillConfig, Policy

Log = Callable[[str], None]
Restore = Callable[[RestoreRequest], RestoreResult]


@dataclass
class Step:
    """One timed step of a drill (a restore)."""

    name: str
    asset: str
    started: str
    finished: str
    seconds: float
    outcome: str
    detail: str = ""


@dataclass
class Check:
    """One verification of a drill and its verdict."""

    name: str
    asset: str
    ok: bool
    detail: str


@dataclass
class DrillRun:
    """A drill's full record: what the evidence bundle holds."""

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
    # What an auditor asks for (issue #14); secrets never go here, only names and ids.
    stopped: str | None = None  # the error that stopped the drill before it was judged
    policy_digest: str = ""  # sha256 of the policy file the drill ran under
    snapshots: dict[str, dict[str, str | None]] = field(default_factory=dict)  # asset -> id, time
    wal: dict[str, dict[str, Any]] = field(default_factory=dict)  # postgres: what replay used
    operator: str = field(default_factory=default_actor)  # user@host that ran the drill
    staging_target: dict[str, Any] = field(default_factory=dict)  # host, path, ports
    key_access: dict[str, Any] = field(default_factory=dict)  # recovery-key file or custodians
    audit_entries: list[str] = field(default_factory=list)  # ids of the drill's audit entries
    signing_key: str = ""  # fingerprint of the key that signs the bundle
    refused_drill_key_records: list[str] = field(default_factory=list)


def policy_digest(policy: Policy) -> str:
    """``sha256:<hex>`` of the policy file (``sha256sum`` reproduces it)."""
    try:
        return "sha256:" + hashlib.sha256(policy.path.read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


def drilled_assets(policy: Policy, drill: DrillConfig) -> list[str]:
    """The assets a drill restores: those it names (else every asset of the policy) whose
    kind takes part in its scenario. Status credits and blames a drill for these alone."""
    return [
        a for a in drill.assets or policy.assets if drill.scenario in kind_of(policy.asset(a)).drill_scenarios
    ]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class DrillRunner:
    """Restores each asset of a drill into staging through its kind, then judges the run."""

    def __init__(
        self,
        policy: Policy,
        name: str,
        repo: Repository,
        restore: Restore,
        *,
        at: datetime | None = None,
        staging_root: Path | None = None,
        log: Log = lambda _: None,
    ) -> None:
        self.policy = policy
        self.restore = restore  # the restore service, on the drill's open repository
        self.name = name
        self.drill = policy.drills[name]
        self.repo = repo
        self.at = at  # the recovery point asked for; None: the newest data there is
        self.reference = at or clock.now()  # the simulated disaster
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.staging = (staging_root or policy.state_dir / "drills") / f"{name}-{stamp}"
        self.log = log
        self.run = DrillRun(
            name, self.drill.scenario, self.reference.isoformat(timespec="seconds"), staging=str(self.staging)
        )
        self.run.policy_digest = policy_digest(policy)
        self.run.staging_target = {"host": self.run.host, "path": str(self.staging), "ports": {}}
        self.restored: dict[str, DrillRestore] = {}  # each asset's drill step, once it succeeded
        self.sources: dict[str, object] = {}  # each source's state when the outage is declared

    def assets(self) -> list[AssetSpec]:
        """The drill's assets whose kind takes part in its scenario."""
        return [self.policy.asset(n) for n in drilled_assets(self.policy, self.drill)]

    def execute(self) -> DrillRun:
        """Restore, verify and measure every asset, cross-check, judge. An error that stops
        the drill midway is its verdict (fail, with the reason), so it still gets evidence."""
        self.run.started = _now()
        try:
            return self._execute()
        except (LifeboatError, OSError) as exc:
            self.run.stopped = (
                exc.message
                if isinstance(exc, LifeboatError)
                else f"{exc.filename or 'staging'}: {exc.strerror}"
            )
            self._judge()
            self.run.finished = _now()
            return self.run

    def _execute(self) -> DrillRun:
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

    def _restore(self, asset: AssetSpec, at: datetime | None) -> tuple[datetime | None, str, Rpo]:
        def restore(request: RestoreRequest) -> RestoreResult:
            result = self.restore(request)
            self._provenance(asset.name, result)
            return result

        step = kind_of(asset).drill(
            DrillContext(
                self.policy,
                asset,
                self.repo,
                self.staging / asset.name,
                at,
                self.reference,
                self.sources.get(asset.name),
                restore,
            )
        )
        self.restored[asset.name] = step
        self.run.logs.update(step.logs)
        self.run.checks += [Check(c.name, asset.name, c.ok, c.detail) for c in step.checks]
        return step.recovered, step.detail, step.rpo

    def _provenance(self, asset: str, result: RestoreResult) -> None:
        """Which snapshot the restore used, the WAL it replayed, the port it served on."""
        snapshot_time = None
        if result.snapshot:
            try:
                info = self.repo.find_snapshot(asset, snapshot_id=result.snapshot)
                snapshot_time = info.time.isoformat(timespec="seconds")
            except LifeboatError:
                pass  # not a snapshot id of this asset: the id alone is recorded
        self.run.snapshots[asset] = {"id": result.snapshot, "time": snapshot_time}
        details = result.details
        if "wal_segments" in details:
            self.run.wal[asset] = {
                key: details.get(key)
                for key in ("wal_first", "wal_last", "wal_segments", "recovery_target", "recovered_to")
            }
            self.run.wal[asset]["timeline"] = (details.get("timeline") or {}).get("followed")
        port = details.get("port")
        if isinstance(port, int):
            self.run.staging_target["ports"][asset] = port

    # -- across assets ------------------------------------------------------------------------

    def _cross_checks(self) -> None:
        for cc in self.drill.cross_checks:
            name = f"{cc.database} rows -> {cc.objects} objects"
            database = self.restored.get(cc.database)
            objects = self.restored.get(cc.objects)
            if database is None or database.service is None or objects is None or objects.locate is None:
                self.run.checks.append(
                    Check(name, cc.database, False, "both assets must be restored in this drill")
                )
                continue
            try:
                rows = database.service.query(cc.query, cc.dbname)
            except Exception as exc:  # the database's own errors: the check fails, the drill goes on
                self.run.checks.append(
                    Check(name, cc.database, False, f"query failed: {str(exc).splitlines()[0]}")
                )
                continue
            missing, mismatched = [], []
            for row in rows:
                path = objects.locate(str(row[0]))
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
        reasons = [f"drill stopped: {self.run.stopped}"] if self.run.stopped else []
        reasons += [f"check failed: {c.asset} {c.name}: {c.detail}" for c in self.run.checks if not c.ok]
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
        """Stop what the drill started; remove the staging unless asked to keep it."""
        # a failed drill's staging is removed too (a full restore each time fills the disk:
        # ~175 MB per demo drill); its evidence says what failed, --keep keeps it to inspect
        self.run.kept = keep
        for step in self.restored.values():
            if step.service is not None:
                step.service.stop()
        if not self.run.kept:
            shutil.rmtree(self.staging, ignore_errors=True)
