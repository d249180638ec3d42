"""The dashboard's SVG charts: axes a person can read (dates, units, the target named)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from lifeboat.ops.charts import BYTES, DURATION, Series, risk_bars, time_chart, time_ticks
from lifeboat.units import format_bytes, format_seconds

T0 = datetime(2026, 11, 30, 22, 10, tzinfo=UTC)


def test_time_ticks_are_round_and_dated_for_any_span():
    ticks, fmt = time_ticks(T0, T0 + timedelta(hours=3))
    labels = [t.strftime(fmt) for t in ticks]
    assert "Nov 30 23:00" in labels and "Dec 01 00:00" in labels  # the date changes at midnight
    assert all(t.minute in (0, 30) for t in ticks) and len(ticks) <= 6
    ticks, fmt = time_ticks(T0, T0 + timedelta(days=40))
    assert fmt == "%Y-%m-%d" and 2 <= len(ticks) <= 6
    assert all(t.hour == 0 and t.minute == 0 for t in ticks)


def test_a_chart_has_unit_ticks_a_named_target_and_exact_titles():
    points = [(T0 + timedelta(days=i), 40.0 + 100 * i) for i in range(5)]
    svg = time_chart("rto-db", "db restore", [Series("restore duration", points)], DURATION, 600.0, "RTO")
    ticks = re.findall(r'class="tick"[^>]*>([^<]+)</text>', svg)
    assert "0 min" in ticks and "10 min" in ticks  # 0..440 s and a 600 s target: minutes
    assert any(re.fullmatch(r"Dec 0\d 00:00|2026-12-0\d", t) for t in ticks)
    assert ">RTO 10 min</text>" in svg
    assert "<title>restore duration: 7 min 20 s (440.000 s) at 2026-12-04 22:10:00 UTC</title>" in svg


def test_one_point_and_no_points_still_read_well():
    svg = time_chart("size", "size", [Series("size", [(T0, 3 * 2**20)])], BYTES)
    assert ">3.0 MiB</text>" in svg and 'class="axis x-axis"' in svg
    assert "no data yet" in time_chart("empty", "empty", [Series("s", [])], BYTES)


def test_fleet_bars_name_the_rpo_and_cap_a_runaway_bar():
    svg = risk_bars("exposure", [("never", 50.0, "never: never backed up"), ("db", 0.5, "db: 50%")])
    assert ">RPO (100 %)</text>" in svg and ">300 %</text>" in svg and ">400 %" not in svg
    assert svg.index(">never</text>") < svg.index(">db</text>")
    assert "<title>never: never backed up</title>" in svg


def test_units_are_iec_and_durations_read_as_words():
    assert [format_bytes(n) for n in (512, 1536, 5 * 2**30)] == ["512 B", "1.5 KiB", "5.0 GiB"]
    assert [format_seconds(s) for s in (2.34, 263.4, 7200, 90000)] == [
        "2.3 s",
        "4 min 23 s",
        "2 h",
        "1 d 1 h",
    ]


def test_success_rate_is_over_the_30_days_before_each_backup():
    from lifeboat.ops.dashboard import success_series

    outcomes = [(T0 + timedelta(days=i), i != 0) for i in range(40)]  # only the first one failed
    rates = [v for _, v in success_series(outcomes)]
    assert rates[0] == 0.0 and rates[1] == 50.0
    assert rates[30] == 100 * 30 / 31  # the failure is exactly 30 days old: still counted
    assert rates[31] == 100.0  # and then out of the window
