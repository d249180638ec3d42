"""Per-asset status: last backup, exposure against the RPO, last drill against the RTO,
backup success rate over 30 days. Shared by `status`, the dashboard and the metrics."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lifeboat import clock
from lifeboat.errors import LifeboatError
from lifeboat.repo import Repository


@dataclass
class AssetStatus:
    asset: str
    kind: str
    data_class: str
    rpo_s: float
    rto_s: float
    last_backup: str | None = None
    exposure_s: float | None = None
    last_drill: str | None = None
    last_drill_rto_s: float | None = None
    last_drill_verdict: str | None = None
    last_drill_name: str | None = None
    last_drill_bundle: str | None = None
    open_actions: list[str] = field(default_factory=list)  # ids of open corrective actions
    overdue_actions: list[str] = field(default_factory=list)  # "CA-0001 due 2026-..."
    success_rate_30d: float | None = None
    bad_pages: int | None = None  # in the latest snapshot, when its pages were verified
    breaches: list[str] = field(default_factory=list)
    divergent: list[dict[str, Any]] = field(default_factory=list)  # WAL branches (postgres)
    host: str = ""  # where the asset lives (see asset_host)
    risk: float | None = None  # exposure / RPO; None: never backed up (the worst)
    archive_failure: str | None = None  # pg_stat_archiver: failing since the last success


def audit_entries(policy: Any) -> list[dict[str, Any]]:
    path = Path(policy.state_dir) / "audit.jsonl"
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def drill_results(policy: Any) -> list[dict[str, Any]]:
    results = []
    for drill in policy.drills.values():
        for path in sorted(Path(drill.evidence_dir).glob("*/drill.json")):
            try:
                data = json.loads(path.read_text())
            except ValueError:
                continue
            data["bundle"] = str(path.parent)
            results.append(data)
    unique = {r["bundle"]: r for r in results}
    return sorted(unique.values(), key=lambda r: r["started"])


def asset_status(policy: Any, repo: Repository, now: datetime | None = None) -> list[AssetStatus]:
    now = now or clock.now()
    snapshots = repo.snapshots()
    audit = audit_entries(policy)
    drills = drill_results(policy)
    month_ago = (now - timedelta(days=30)).isoformat()
    statuses = []
    for name, asset in policy.assets.items():
        cls = policy.classes[asset.class_]
        st = AssetStatus(name, asset.kind, asset.class_, cls.rpo.total_seconds(), cls.rto.total_seconds())
        mine = [s for s in snapshots if s.asset == name]
        newest = mine[-1].time if mine else None
        if asset.kind == "postgres" and mine:
            _page_verdict(st, mine[-1])
        if asset.kind == "postgres":
            wal = [
                e
                for e in audit
                if e["operation"] == "wal-push" and e.get("asset") == name and e["outcome"] == "ok"
            ]
            if wal:
                pushed = datetime.fromisoformat(wal[-1]["time"])
                newest = max(newest, pushed) if newest else pushed
            st.divergent, archived = _wal_tree_findings(repo, name)
            # the archive itself, not this host's audit log: a fleet's status host sees
            # the WAL every other host pushed
            if archived is not None:
                newest = max(newest, archived) if newest else archived
            _archiver_verdict(st, asset)
            for d in st.divergent:
                st.breaches.append(
                    f"divergent WAL branch: timeline {d['timeline']} forked from {d['parent']} at "
                    f"{d['fork_lsn'] or '?'} and both archived; newest WAL on timeline {d['newest_wal_on']}"
                )
            if asset.stream:
                streamed = _newest_streamed(repo, name)
                if streamed is not None:
                    newest = max(newest, streamed) if newest else streamed
        st.host = asset_host(asset)
        if newest is not None:
            st.last_backup = newest.isoformat(timespec="seconds")
            st.exposure_s = round((now - newest).total_seconds(), 1)
            st.risk = round(st.exposure_s / max(st.rpo_s, 1.0), 4)
            if st.exposure_s > st.rpo_s:
                st.breaches.append(f"exposure {st.exposure_s:.0f}s exceeds RPO {st.rpo_s:.0f}s")
        else:
            st.breaches.append("never backed up")
        runs = [
            e
            for e in audit
            if e["operation"] == "backup" and e.get("asset") == name and e["time"] >= month_ago
        ]
        if runs:
            st.success_rate_30d = round(sum(e["outcome"] == "ok" for e in runs) / len(runs), 4)
            if st.success_rate_30d < cls.success_target:
                st.breaches.append(f"success rate {st.success_rate_30d:.0%} below {cls.success_target:.0%}")
        last_drill_findings(st, drills)
        statuses.append(st)
    corrective_action_findings(policy, statuses, now)
    return statuses


def asset_host(asset: Any) -> str:
    """The policy's ``host``, else a PostgreSQL cluster's host from its dsn (the primary's:
    the cluster lives there even when backups read a standby), else this machine."""
    from lifeboat.assets.postgres.standby import dsn_host

    if getattr(asset, "host", None):
        return str(asset.host)
    return dsn_host(getattr(asset, "dsn", None))


def _risk_key(st: AssetStatus) -> tuple[int, float, str]:
    return (0, 0.0, st.asset) if st.risk is None else (1, -st.risk, st.asset)


def fleet_groups(statuses: list[AssetStatus]) -> list[tuple[str, list[AssetStatus]]]:
    """Assets grouped by host, riskiest first within a host, and the host whose riskiest
    asset is worst first: an operator reads from the top until things look fine."""
    by_host: dict[str, list[AssetStatus]] = {}
    for st in sorted(statuses, key=_risk_key):
        by_host.setdefault(st.host, []).append(st)
    return sorted(by_host.items(), key=lambda item: (_risk_key(item[1][0]), item[0]))


def fleet_order(statuses: list[AssetStatus]) -> list[AssetStatus]:
    return [st for _, group in fleet_groups(statuses) for st in group]


def _archiver_verdict(st: AssetStatus, asset: Any) -> None:
    """A server whose archive_command fails loses its point-in-time recovery silently:
    the audit log only records the pushes that worked."""
    from lifeboat.assets.postgres.configure import archive_failure

    st.archive_failure = archive_failure(asset.dsn)
    if st.archive_failure is not None:
        st.breaches.append(st.archive_failure)


def _page_verdict(st: AssetStatus, latest: Any) -> None:
    """Degraded while the latest snapshot holds pages that failed their checksum: every
    backup taken since the corruption carries it, so an older snapshot may be the good one."""
    try:
        st.bad_pages = int(latest.labels["bad_pages"])
    except (KeyError, ValueError):
        return
    if st.bad_pages:
        where = latest.labels.get("bad_page_blocks", "")
        detail = f" ({where})" if where else ""
        st.breaches.append(f"degraded: {st.bad_pages} bad page(s) in snapshot {latest.short_id}{detail}")


def last_drill_findings(st: AssetStatus, drills: list[dict[str, Any]]) -> None:
    """The newest drill that restored this asset: its verdict is the asset's, since a
    failed drill means nobody has shown the asset can come back."""
    for drill in reversed(drills):
        if st.asset not in drill.get("achieved", {}):
            continue
        st.last_drill = drill["started"]
        st.last_drill_rto_s = drill["achieved"][st.asset]["rto_s"]
        st.last_drill_verdict = drill["verdict"]
        st.last_drill_name = drill.get("drill")
        st.last_drill_bundle = drill.get("bundle")
        if drill["verdict"] != "pass":
            st.breaches.append(f"last drill {st.last_drill_name} failed ({drill['started'][:19]})")
        if st.last_drill_rto_s is not None and st.last_drill_rto_s > st.rto_s:
            st.breaches.append(f"last drill RTO {st.last_drill_rto_s:.0f}s exceeds {st.rto_s:.0f}s")
        return


def corrective_action_findings(policy: Any, statuses: list[AssetStatus], now: datetime) -> None:
    """Open corrective actions per asset (an action that names no asset counts for every
    asset of its drill); an overdue one is a breach (see drills/actions.py)."""
    from lifeboat.drills.service import action_period, ledger_for

    by_name = {st.asset: st for st in statuses}
    for action in ledger_for(policy).load():
        if action.status != "open":
            continue
        assets = [action.asset] if action.asset else _drill_assets(policy, action.source)
        period = action_period(policy, action.source, action.asset)
        due = action.due_time(period)
        for name in assets:
            st = by_name.get(name)
            if st is None:
                continue
            st.open_actions.append(action.id)
            if action.overdue(now, period):
                st.overdue_actions.append(f"{action.id} due {due.isoformat(timespec='seconds')}")
                st.breaches.append(f"corrective action {action.id} overdue since {due.date().isoformat()}")


def _drill_assets(policy: Any, source: str) -> list[str]:
    drill = policy.drills.get(source.removeprefix("drill "))
    if drill is None:
        return []
    return list(drill.assets or policy.assets)


def _wal_tree_findings(repo: Repository, asset: str) -> tuple[list[dict[str, Any]], datetime | None]:
    """Timelines whose parent kept archiving after they forked (see timelines.py), and when
    the newest WAL file reached the archive."""
    from lifeboat.assets.postgres.timelines import build_tree
    from lifeboat.assets.postgres.wal import namespace

    try:
        tree = build_tree(repo, namespace(asset))
    except LifeboatError:
        return [], None
    if not tree.timelines:
        return [], None
    return [d.__dict__ for d in tree.divergences()], tree.newest().newest_time


def _newest_streamed(repo: Repository, asset: str) -> datetime | None:
    from lifeboat.assets.postgres.stream import newest_stream_time, stream_namespace

    stamp = newest_stream_time(repo.list_ref_names(stream_namespace(asset)))
    return datetime.fromtimestamp(stamp, UTC) if stamp is not None else None


def key_warnings(policy: Any, repo: Repository, now: datetime | None = None) -> list[str]:
    """Backup keys older than the policy's maximum key age (the strictest class wins)."""
    now = now or clock.now()
    if not policy.classes:
        return []
    max_age = min(c.key_max_age for c in policy.classes.values())
    try:
        record = repo.get_record(f"keys/{repo.key_id}.json")
        created = datetime.fromisoformat(record["created"])
    except (LifeboatError, KeyError, ValueError):
        return []
    age = now - created
    if age > max_age:
        return [
            f"backup key {repo.key_id} is {age.days} days old (maximum {max_age.days}): "
            "run 'lifeboat keys rotate'"
        ]
    return []


@dataclass(frozen=True)
class WalBacklog:
    segments: int
    lag_s: float


def wal_archive_backlog(pgdata: Path | None, spool: Path, now: float | None = None) -> WalBacklog:
    """WAL that PostgreSQL finished but the repository does not hold yet: segments marked
    ``.ready`` in pg_wal/archive_status (archive_command not done) plus files in the async
    spool (not drained). Its age is the archive lag, i.e. the RPO exposure from archiving."""
    now = now if now is not None else time.time()
    mtimes: list[float] = []
    places = [(spool, "")]
    if pgdata is not None:
        places.append((Path(pgdata) / "pg_wal" / "archive_status", ".ready"))
    for directory, suffix in places:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(suffix):
                continue
            try:
                mtimes.append(entry.stat().st_mtime)
            except OSError:
                continue
    return WalBacklog(len(mtimes), round(max(0.0, now - min(mtimes)), 1) if mtimes else 0.0)
