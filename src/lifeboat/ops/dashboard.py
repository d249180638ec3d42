"""The static dashboard: one self-contained HTML page (inline CSS and SVG, no JavaScript,
nothing fetched). Charts come from ops/charts.py; this module turns the repository, the
audit log and the drill evidence into their series."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader

from lifeboat import runtime
from lifeboat.ops.charts import BYTES, DURATION, PERCENT, Series, risk_bars, time_chart
from lifeboat.ops.status import AssetStatus, achieved_rto, asset_status, audit_entries, drill_results
from lifeboat.ops.status_view import StatusView
from lifeboat.units import format_bytes, format_seconds

if TYPE_CHECKING:
    from lifeboat.policy import Policy


MAX_POINTS = 400  # per series: the newest; older history is in the audit log
SUCCESS_WINDOW = timedelta(days=30)


@dataclass
class AssetCharts:
    status: AssetStatus
    risk: float | None
    charts: dict[str, str] = field(default_factory=dict)


def _when(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def risk(st: AssetStatus) -> float | None:
    """Exposure as a share of the RPO: the fleet view's sort key (never backed up: riskiest)."""
    if st.exposure_s is None:
        return None
    return st.exposure_s / st.rpo_s if st.rpo_s else 0.0


def exposure_series(
    events: list[datetime], now: datetime, current: float | None
) -> list[tuple[datetime, float]]:
    """A sawtooth: exposure grows with time and drops to zero at each recovery point."""
    points: list[tuple[datetime, float]] = []
    for prev, point in itertools.pairwise(events):
        points += [(point, (point - prev).total_seconds()), (point, 0.0)]
    if events:
        points.insert(0, (events[0], 0.0))
        points.append((now, current if current is not None else (now - events[-1]).total_seconds()))
    return points[-MAX_POINTS:]


def success_series(outcomes: list[tuple[datetime, bool]]) -> list[tuple[datetime, float]]:
    """Per backup, the share of backups in the 30 days up to it that succeeded (%): a
    sliding window, linear in the number of backups (the daemon redraws every 30 s)."""
    points: list[tuple[datetime, float]] = []
    first = ok = 0
    for t, success in outcomes:
        ok += success
        while t - outcomes[first][0] > SUCCESS_WINDOW:
            ok -= outcomes[first][1]
            first += 1
        count = len(points) + 1 - first
        points.append((t, 100.0 * ok / count))
    return points[-MAX_POINTS:]


def recovery_points(name: str, snaps: list[Any], audit: list[dict[str, Any]]) -> list[datetime]:
    """Each snapshot and, for PostgreSQL, each archived WAL segment is a point to recover to."""
    mine = [e for e in audit if e.get("asset") == name and e.get("outcome") == "ok"]
    events = [_when(e["time"]) for e in mine if e["operation"] in ("backup", "wal-push")]
    return events + [s.time if s.time.tzinfo else s.time.replace(tzinfo=UTC) for s in snaps]


def backup_outcomes(audit: list[dict[str, Any]], name: str | None = None) -> list[tuple[datetime, bool]]:
    backups = [e for e in audit if e["operation"] == "backup" and name in (None, e.get("asset"))]
    return [(_when(e["time"]), e["outcome"] == "ok") for e in backups]


def asset_charts(
    policy: Policy,
    st: AssetStatus,
    snaps: list[Any],
    audit: list[dict[str, Any]],
    drills: list[dict[str, Any]],
    now: datetime,
) -> AssetCharts:
    name = st.asset
    points = sorted(recovery_points(name, snaps, audit))
    out = AssetCharts(st, risk(st))
    out.charts["exposure"] = time_chart(
        f"exposure-{name}",
        f"{name}: exposure (data at risk) over time vs RPO",
        [Series("exposure", exposure_series(points, now, st.exposure_s), dots=False)],
        DURATION,
        target=st.rpo_s,
        target_label="RPO",
        y_title="exposure",
    )
    measured = [(d, achieved_rto(d, name)) for d in drills]
    drill_points = [(_when(d["started"]), rto) for d, rto in measured if rto is not None]
    out.charts["rto"] = time_chart(
        f"rto-{name}",
        f"{name}: restore duration per drill vs RTO",
        [Series("restore duration", drill_points)],
        DURATION,
        target=st.rto_s,
        target_label="RTO",
        y_title="restore duration",
    )
    timed = [(s.time, s) for s in snaps][-MAX_POINTS:]
    out.charts["duration"] = time_chart(
        f"duration-{name}",
        f"{name}: backup duration",
        [Series("backup duration", [(t, s.stats.seconds) for t, s in timed])],
        DURATION,
        y_title="duration",
    )
    out.charts["size"] = time_chart(
        f"size-{name}",
        f"{name}: backup size and bytes stored",
        [
            Series("size of the data", [(t, float(s.stats.bytes)) for t, s in timed]),
            Series(
                "stored (new, compressed)",
                [(t, float(s.stats.stored_bytes)) for t, s in timed],
                css="series2",
            ),
        ],
        BYTES,
        y_title="size",
    )
    outcomes = [
        (_when(e["time"]), e["outcome"] == "ok")
        for e in audit
        if e.get("asset") == name and e["operation"] == "backup"
    ]
    target = policy.data_class(name).success_target * 100
    out.charts["success"] = time_chart(
        f"success-{name}",
        f"{name}: backup success rate (30 days) vs target",
        [Series("success rate", success_series(outcomes))],
        PERCENT,
        target=target,
        target_label="target",
        y_title="success",
        y_max=100.0,
    )
    return out


def fleet_rows(assets: list[AssetCharts]) -> list[tuple[str, float, str]]:
    rows = []
    for a in assets:
        st = a.status
        if a.risk is None:
            rows.append((st.asset, 10.0, f"{st.asset}: never backed up (RPO {format_seconds(st.rpo_s)})"))
            continue
        exact = (
            f"{st.asset}: exposure {format_seconds(st.exposure_s or 0)} of RPO {format_seconds(st.rpo_s)} "
            f"({a.risk:.0%})"
        )
        rows.append((st.asset, a.risk, exact))
    return rows


def build_dashboard(
    policy: Policy, out_dir: Path, now: datetime | None = None, statuses: list[AssetStatus] | None = None
) -> Path:
    """The dashboard page in ``out_dir``, of ``statuses`` when the caller has just taken them
    (the daemon's refresh: asking the servers again would wait on a silent one twice)."""
    now = now or datetime.now(UTC)
    view = StatusView.of(policy)
    repo = runtime.open_for_write(policy)
    try:
        with runtime.drill_copy_records(policy) as copies:
            if statuses is None:
                statuses = asset_status(view, repo, now, copies=copies)
            snapshots = sorted(repo.snapshots(), key=lambda s: s.time)
            audit = audit_entries(policy.state_dir)
            # the page lists them all
            drills = drill_results(view, repo, audit, every=True, copies=copies).results
    finally:
        repo.close()  # the daemon builds one every 30 s: its sockets must not pile up
    assets = [
        asset_charts(policy, st, [s for s in snapshots if s.asset == st.asset], audit, drills, now)
        for st in statuses
    ]
    assets.sort(key=lambda a: -(a.risk if a.risk is not None else float("inf")))
    growth, total = [], 0.0
    for snap in snapshots:
        total += snap.stats.stored_bytes
        growth.append((snap.time, total))
    backups = backup_outcomes(audit)
    from lifeboat.drills.service import ledger_for

    env = Environment(loader=PackageLoader("lifeboat.ops"), autoescape=True)
    env.filters["seconds"] = lambda v: "-" if v is None else format_seconds(v)
    env.filters["iec"] = format_bytes
    page = env.get_template("dashboard.html.j2").render(
        generated=now.isoformat(timespec="seconds"),
        assets=assets,
        exposure_chart=risk_bars("exposure", fleet_rows(assets)),
        growth_chart=time_chart(
            "growth", "repository size over time", [Series("stored", growth)], BYTES, y_title="stored"
        ),
        success_chart=time_chart(
            "success",
            "backup success rate (30 days), all assets",
            [Series("success rate", success_series(backups))],
            PERCENT,
            y_title="success",
            y_max=100.0,
        ),
        drills=list(reversed(drills)),
        actions=[a for a in ledger_for(policy).load() if a.status == "open"],
        out_dir=out_dir,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "index.html").write_text(page)
    return out_dir / "index.html"
