"""The static dashboard: one self-contained HTML page (inline CSS and SVG, no CDN)."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader

from lifeboat import runtime
from lifeboat.ops.status import AssetStatus, asset_status, audit_entries, drill_results

W, H, PAD = 560, 200, 40


def bar_chart(statuses: list[AssetStatus]) -> str:
    """Exposure now against each asset's RPO (as a share of the RPO; 100% is the line)."""
    n = max(len(statuses), 1)
    bw = (W - 2 * PAD) / n
    parts = [
        f'<svg class="chart" id="exposure" viewBox="0 0 {W} {H}" role="img" aria-label="exposure vs RPO">'
    ]
    y100 = H - PAD - (H - 2 * PAD) / 2
    parts.append(f'<line x1="{PAD}" x2="{W - PAD}" y1="{y100}" y2="{y100}" class="target"/>')
    parts.append(f'<text x="{W - PAD}" y="{y100 - 4}" text-anchor="end" class="label">RPO</text>')
    for i, st in enumerate(statuses):
        ratio = min((st.exposure_s or 0) / st.rpo_s, 2.0) if st.rpo_s else 0
        h = ratio / 2 * (H - 2 * PAD)
        x = PAD + i * bw + bw * 0.15
        cls = "bad" if ratio > 1 else "good"
        parts.append(
            f'<rect x="{x:.1f}" y="{H - PAD - h:.1f}" width="{bw * 0.7:.1f}" height="{h:.1f}" class="{cls}">'
            f"<title>{html.escape(st.asset)}: {st.exposure_s or 0:.0f}s of {st.rpo_s:.0f}s</title></rect>"
        )
        parts.append(
            f'<text x="{x + bw * 0.35:.1f}" y="{H - PAD + 14}" text-anchor="middle" class="label">'
            f"{html.escape(st.asset)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(points: list[tuple[str, float]], target: float | None, chart_id: str, unit: str) -> str:
    parts = [f'<svg class="chart" id="{chart_id}" viewBox="0 0 {W} {H}" role="img" aria-label="{chart_id}">']
    values = [v for _, v in points] + ([target] if target else [])
    top = max(values) * 1.2 if values else 1.0

    def y(v: float) -> float:
        return H - PAD - (v / top) * (H - 2 * PAD)

    if target:
        parts.append(
            f'<line x1="{PAD}" x2="{W - PAD}" y1="{y(target):.1f}" y2="{y(target):.1f}" class="target"/>'
        )
        parts.append(
            f'<text x="{W - PAD}" y="{y(target) - 4:.1f}" text-anchor="end" class="label">target</text>'
        )
    if points:
        step = (W - 2 * PAD) / max(len(points) - 1, 1)
        coords = [(PAD + i * step, y(v)) for i, (_, v) in enumerate(points)]
        parts.append(
            '<polyline class="series" points="' + " ".join(f"{x:.1f},{yy:.1f}" for x, yy in coords) + '"/>'
        )
        for (x, yy), (label, v) in zip(coords, points, strict=True):
            parts.append(
                f'<circle cx="{x:.1f}" cy="{yy:.1f}" r="3"><title>{html.escape(label)}: {v:.1f}{unit}'
                "</title></circle>"
            )
    else:
        parts.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" class="label">no data yet</text>')
    parts.append("</svg>")
    return "".join(parts)


def build_dashboard(policy: Any, out_dir: Path, now: datetime | None = None) -> Path:
    repo = runtime.open_for_write(policy)
    statuses = asset_status(policy, repo, now)
    drills = drill_results(policy)
    snapshots = repo.snapshots()
    growth: list[tuple[str, float]] = []
    total = 0.0
    for snap in snapshots:
        total += snap.stats.stored_bytes
        growth.append((snap.time.strftime("%Y-%m-%d %H:%M"), total / 1e6))
    rto_charts = {}
    for st in statuses:
        points = [
            (d["started"][:16], d["achieved"][st.asset]["rto_s"])
            for d in drills
            if st.asset in d.get("achieved", {}) and d["achieved"][st.asset]["rto_s"] is not None
        ]
        rto_charts[st.asset] = line_chart(points, st.rto_s, f"rto-{st.asset}", "s")
    backups = [e for e in audit_entries(policy) if e["operation"] == "backup"]
    success = [(e["time"][:16], 100.0 if e["outcome"] == "ok" else 0.0) for e in backups[-60:]]
    from lifeboat.drills.service import ledger_for

    env = Environment(loader=PackageLoader("lifeboat.ops"), autoescape=True)
    page = env.get_template("dashboard.html.j2").render(
        generated=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
        statuses=statuses,
        exposure_chart=bar_chart(statuses),
        rto_charts=rto_charts,
        growth_chart=line_chart(growth, None, "growth", " MB"),
        success_chart=line_chart(success, None, "success", "%"),
        drills=list(reversed(drills)),
        actions=[a for a in ledger_for(policy).load() if a.status == "open"],
        out_dir=out_dir,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "index.html").write_text(page)
    return out_dir / "index.html"
