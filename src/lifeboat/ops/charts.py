"""Server-rendered SVG charts with real axes: dated time axes, value axes in units, the target
as a labelled line, and an SVG <title> with the exact value on every point (the browser's
hover tooltip). No JavaScript, no vendored library, nothing fetched: the page works from a
file, an air-gapped host or an evidence bundle. Colours are CSS classes, so the page's
`prefers-color-scheme` rules restyle the charts for dark mode."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape

from lifeboat.units import bytes_scale, duration_scale, format_bytes, format_seconds

W, H = 600, 250
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 18, 48
TIME_STEPS = [
    timedelta(minutes=m) for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080, 20160)
] + [timedelta(days=30), timedelta(days=91), timedelta(days=365)]
MAX_TICKS = 6


@dataclass(frozen=True)
class Unit:
    """How a value axis reads: the tick unit for a range, and the exact value for a title."""

    scale: Callable[[float], tuple[float, str]]
    exact: Callable[[float], str]
    short: Callable[[float], str]


DURATION = Unit(duration_scale, lambda v: f"{format_seconds(v)} ({v:.3f} s)", format_seconds)
BYTES = Unit(bytes_scale, lambda v: f"{format_bytes(v)} ({v:,.0f} bytes)", format_bytes)
PERCENT = Unit(lambda top: (1.0, "%"), lambda v: f"{v:.1f}%", lambda v: f"{v:.0f}%")


@dataclass
class Series:
    name: str
    points: list[tuple[datetime, float]]
    css: str = "series"
    dots: bool = True


def nice_step(span: float, ticks: int = 5) -> float:
    """1, 2 or 5 times a power of ten, so that about ``ticks`` ticks cover ``span``."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def time_ticks(start: datetime, end: datetime) -> tuple[list[datetime], str]:
    """Ticks on round times (a step from 1 minute to a year) and their label format."""
    span = end - start
    step = next((s for s in TIME_STEPS if span / s <= MAX_TICKS), TIME_STEPS[-1])
    seconds = step.total_seconds()
    first = math.ceil(start.timestamp() / seconds) * seconds
    ticks = []
    t = first
    while t <= end.timestamp() + 1e-6:
        ticks.append(datetime.fromtimestamp(t, UTC))
        t += seconds
    fmt = "%Y-%m-%d" if step >= timedelta(days=1) else "%b %d %H:%M"
    return ticks, fmt


def time_chart(
    chart_id: str,
    label: str,
    series: list[Series],
    unit: Unit,
    target: float | None = None,
    target_label: str = "target",
    y_title: str = "",
    y_max: float | None = None,
) -> str:
    """A line chart over time; ``target`` is drawn as a dashed, labelled horizontal line."""
    points = [p for s in series for p in s.points]
    head = (
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>'
    )
    if not points:
        return head + (
            f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" class="label empty">no data yet</text></svg>'
        )
    times = [_utc(t) for t, _ in points]
    start, end = min(times), max(times)
    if end - start < timedelta(minutes=2):  # one point, or a burst: a readable window around it
        start, end = start - timedelta(minutes=30), end + timedelta(minutes=30)
    values = [v for _, v in points] + ([target] if target is not None else [])
    top = y_max if y_max is not None else max(max(values) * 1.15, 1e-9)
    divisor, suffix = unit.scale(top)
    step = nice_step(top / divisor)
    top = math.ceil(top / divisor / step) * step * divisor

    def x(t: datetime) -> float:
        return LEFT + (_utc(t) - start) / (end - start) * (W - LEFT - RIGHT)

    def y(v: float) -> float:
        return H - BOTTOM - (v / top) * (H - TOP - BOTTOM)

    parts = [head, _y_axis(top, divisor, step, suffix, y, y_title), _x_axis(start, end, x)]
    if target is not None:
        parts.append(_target_line(y(target), f"{target_label} {unit.short(target)}"))
    for s in series:
        parts.append(_series(s, x, y, unit))
    parts.append("</svg>")
    return "".join(parts)


def _y_axis(
    top: float, divisor: float, step: float, suffix: str, y: Callable[[float], float], title: str
) -> str:
    parts = [f'<g class="axis y-axis"><line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{H - BOTTOM}"/>']
    n = round(top / divisor / step)
    for i in range(n + 1):
        value = i * step
        yy = y(value * divisor)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{value:g} {suffix}</text>'
        )
    if title:
        mid = (TOP + H - BOTTOM) / 2
        parts.append(
            f'<text class="axis-title" transform="translate(14 {mid:.0f}) rotate(-90)" '
            f'text-anchor="middle">{escape(title)} ({suffix})</text>'
        )
    return "".join(parts) + "</g>"


def _x_axis(start: datetime, end: datetime, x: Callable[[datetime], float]) -> str:
    ticks, fmt = time_ticks(start, end)
    parts = [
        f'<g class="axis x-axis"><line x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" y2="{H - BOTTOM}"/>'
    ]
    for t in ticks:
        xx = x(t)
        parts.append(
            f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{H - BOTTOM}" y2="{H - BOTTOM + 4}"/>'
            f'<text class="tick" x="{xx:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">'
            f"{t.strftime(fmt)}</text>"
        )
    parts.append(
        f'<text class="axis-title" x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle">'
        "time (UTC)</text></g>"
    )
    return "".join(parts)


def _target_line(yy: float, text: str) -> str:
    return (
        f'<g class="target"><line x1="{LEFT}" x2="{W - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}"/>'
        f'<text class="target-label" x="{W - RIGHT - 4}" y="{yy - 5:.1f}" text-anchor="end">'
        f"{escape(text)}</text><title>{escape(text)}</title></g>"
    )


def _series(s: Series, x: Callable[[datetime], float], y: Callable[[float], float], unit: Unit) -> str:
    coords = [(x(t), y(v)) for t, v in s.points]
    parts = [f'<g class="{s.css}"><title>{escape(s.name)}</title>']
    parts.append('<polyline points="' + " ".join(f"{a:.1f},{b:.1f}" for a, b in coords) + '"/>')
    if s.dots:
        for (a, b), (t, v) in zip(coords, s.points, strict=True):
            when = _utc(t).strftime("%Y-%m-%d %H:%M:%S UTC")
            parts.append(
                f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5"><title>{escape(s.name)}: '
                f"{escape(unit.exact(v))} at {when}</title></circle>"
            )
        # the newest value in words beside its point: the figure people look for first
        a, b = coords[-1]
        anchor = "end" if a > W - RIGHT - 120 else "start"
        dx = -6 if anchor == "end" else 6
        parts.append(
            f'<text class="value" x="{a + dx:.1f}" y="{b - 6:.1f}" text-anchor="{anchor}">'
            f"{escape(unit.short(s.points[-1][1]))}</text>"
        )
    return "".join(parts) + "</g>"


def risk_bars(chart_id: str, rows: list[tuple[str, float, str]], limit: float = 1.0) -> str:
    """Horizontal bars of exposure as a share of the RPO, riskiest first, with a labelled
    100% line; ``rows`` are (asset, ratio, exact text for the hover title)."""
    row_h = 28
    height = TOP + BOTTOM + row_h * max(len(rows), 1)
    # beyond 300% the bar runs off the end: its title still says the exact figure
    top = min(max([limit * 1.25] + [r for _, r, _ in rows]), 3.0) * 100
    step = nice_step(top)
    top = math.ceil(top / step) * step
    width = W - LEFT - RIGHT - 40

    def x(pct: float) -> float:
        return LEFT + 40 + pct / top * width

    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {W} {height}" role="img" '
        f'aria-label="exposure as a share of the RPO, riskiest first"><title>exposure / RPO</title>'
        f'<g class="axis x-axis"><line x1="{x(0)}" x2="{x(top)}" y1="{height - BOTTOM}" '
        f'y2="{height - BOTTOM}"/>'
    ]
    for i in range(round(top / step) + 1):
        xx = x(i * step)
        parts.append(
            f'<line class="grid" x1="{xx:.1f}" x2="{xx:.1f}" y1="{TOP}" y2="{height - BOTTOM}"/>'
            f'<text class="tick" x="{xx:.1f}" y="{height - BOTTOM + 16}" text-anchor="middle">'
            f"{i * step:g} %</text>"
        )
    parts.append(
        f'<text class="axis-title" x="{x(top / 2):.0f}" y="{height - 8}" text-anchor="middle">'
        "exposure now as a share of the RPO (%)</text></g>"
    )
    for i, (asset, ratio, exact) in enumerate(rows):
        yy = TOP + i * row_h + 4
        css = "bad" if ratio > limit else "warn" if ratio > limit * 0.75 else "good"
        bar = max(x(min(ratio * 100, top)) - x(0), 1)
        parts.append(
            f'<text class="tick asset-label" x="{x(0) - 6}" y="{yy + 15}" text-anchor="end">'
            f"{escape(asset)}</text>"
            f'<rect class="{css}" x="{x(0):.1f}" y="{yy}" width="{bar:.1f}" '
            f'height="{row_h - 8}"><title>{escape(exact)}</title></rect>'
        )
    xl = x(limit * 100)
    parts.append(
        f'<g class="target"><line x1="{xl:.1f}" x2="{xl:.1f}" y1="{TOP - 6}" y2="{height - BOTTOM}"/>'
        f'<text class="target-label" x="{xl + 4:.1f}" y="{TOP + 2}">RPO (100 %)</text></g></svg>'
    )
    return "".join(parts)
