"""Human units, one place: IEC sizes (KiB, MiB, GiB) and durations, for every human output
(CLI lines, the dashboard). Machine output (`--json`, /metrics) stays in bytes and seconds."""

from __future__ import annotations

IEC = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
DURATIONS = ((86400.0, "d"), (3600.0, "h"), (60.0, "min"), (1.0, "s"))


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``; bytes below 1 KiB as a whole number."""
    value = float(n)
    for unit in IEC:
        if abs(value) < 1024 or unit == IEC[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_rate(bytes_per_second: float) -> str:
    return f"{format_bytes(bytes_per_second)}/s"


def bytes_scale(top: float) -> tuple[float, str]:
    """The IEC unit a chart axis reaching ``top`` bytes is labelled in."""
    divisor = 1.0
    for unit in IEC:
        if top / divisor < 1024 or unit == IEC[-1]:
            return divisor, unit
        divisor *= 1024
    raise AssertionError("unreachable")


def duration_scale(top: float) -> tuple[float, str]:
    """The unit a chart axis reaching ``top`` seconds is labelled in (up to 2 of them)."""
    for divisor, unit in DURATIONS:
        if top >= 2 * divisor:
            return divisor, unit
    return 1.0, "s"


def format_seconds(seconds: float) -> str:
    """``263.4`` -> ``4 min 23 s``; under a minute with one decimal."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    parts = []
    rest = round(seconds)
    for divisor, unit in DURATIONS:
        count, rest = divmod(rest, int(divisor))
        if count:
            parts.append(f"{count} {unit}")
    return " ".join(parts[:2])
