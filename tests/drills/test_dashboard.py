"""The dashboard renders offline in a real browser: charts with dated time axes, value axes
in units, labelled targets and exact hover values, in light and dark, without console errors."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

ASSETS = ("maindb", "media", "platform-keys")
DATE_TICK = re.compile(r'class="tick"[^>]*>([A-Z][a-z]{2} \d{2} \d{2}:\d{2}|\d{4}-\d{2}-\d{2})</text>')


def test_dashboard_is_self_contained(demo):
    page = (demo.root / "dashboard" / "index.html").read_text()
    assert not re.search(r"(src|href)=\"https?://", page)  # no CDN, nothing fetched
    assert "<script" not in page
    for chart in ("exposure", "growth", "success"):
        assert f'id="{chart}"' in page
    for asset in ASSETS:
        for chart in ("exposure", "rto", "duration", "size", "success"):
            assert f'id="{chart}-{asset}"' in page
    assert "<polyline" in page and "<rect" in page
    for table in ("assets", "drills", "actions"):
        assert f'id="{table}"' in page
    assert "full-outage" in page
    assert "prefers-color-scheme: dark" in page


def test_report_command_writes_the_dashboard(demo):
    out = demo.tmpdir("report")
    demo.run("report", "--out", str(out))
    assert 'id="rto-maindb"' in (out / "index.html").read_text()


def test_charts_have_axes_units_targets_and_exact_values(demo):
    page = (demo.root / "dashboard" / "index.html").read_text()
    chart = re.search(r'<svg[^>]*id="rto-maindb".*?</svg>', page, re.S)
    assert chart is not None
    svg = chart.group(0)
    assert 'class="axis x-axis"' in svg and 'class="axis y-axis"' in svg
    assert DATE_TICK.search(svg), "the time axis is labelled with dates"
    assert re.search(r'class="tick"[^>]*>\d+(\.\d+)? (s|min|h)</text>', svg), "value ticks carry a unit"
    assert "RTO 10 min" in svg  # the demo's critical class: the target line says what it is
    # the drill's point says its exact duration and when
    assert re.search(r"<title>restore duration: [\d.]+ s \([\d.]+ s\) at \d{4}-\d{2}-\d{2} ", svg)
    size = re.search(r'<svg[^>]*id="size-media".*?</svg>', page, re.S)
    assert size is not None and re.search(r">\d+ (KiB|MiB)</text>", size.group(0))
    assert re.search(r"\(\d{1,3}(,\d{3})* bytes\) at \d{4}-", size.group(0))
    assert "RPO 5 min" in page and "target 99%" in page
    # the fleet view is sorted by risk: the table lists assets by exposure/RPO, riskiest first
    order = re.findall(r'<td><a href="#asset-([\w-]+)">', page)
    assert sorted(order) == sorted(ASSETS) and order[-1] == "platform-keys"  # a 1d RPO: least at risk


def chromium(demo, *args: str) -> subprocess.CompletedProcess[str]:
    profile = demo.tmpdir(f"profile-{len(list((demo.root / 'scratch').glob('profile-*')))}")
    cmd = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        *args,
    ]
    return demo.shell(cmd, check=True)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Failed to load resource" in line]


def paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def mean_brightness(png: Path) -> float:
    """Average of R, G and B over the image (8-bit RGB/RGBA PNG, as Chromium writes)."""
    data = png.read_bytes()
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        chunks += [body] if kind == b"IDAT" else []
        pos += 12 + length
    width, height, _, colour = struct.unpack(">IIBB", header[:10])
    bpp = 4 if colour == 6 else 3
    raw, stride = zlib.decompress(b"".join(chunks)), width * bpp
    prev, total = bytearray(stride), 0
    for row in range(height):
        kind, line = (
            raw[row * (stride + 1)],
            bytearray(raw[row * (stride + 1) + 1 : (row + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pred = [0, a, b, (a + b) // 2, min((a, b, c), key=lambda v: (abs(p - v), (a, b, c).index(v)))][
                kind
            ]
            line[i] = (line[i] + pred) & 0xFF
        total += sum(v for i, v in enumerate(line) if i % bpp < 3)
        prev = line
    return total / (width * height * 3)


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")
def test_chromium_renders_the_dashboard(demo):
    url = f"file://{demo.root / 'dashboard' / 'index.html'}"
    shot = demo.tmpdir("screenshot") / "dashboard.png"
    proc = chromium(demo, "--window-size=1280,1600", f"--screenshot={shot}", url)
    assert shot.exists() and shot.stat().st_size > 20_000
    assert console_errors(proc.stderr) == []
    dom = chromium(demo, "--window-size=1280,1600", "--dump-dom", url)
    rendered = dom.stdout
    assert console_errors(dom.stderr) == []
    assert rendered.count("<svg") >= 3 + 5 * len(ASSETS) and "maindb" in rendered
    assert rendered.count('class="axis x-axis"') >= 2 + 5 * len(ASSETS)
    assert len(DATE_TICK.findall(rendered)) >= 10
    assert 'class="target-label"' in rendered and "RTO 10 min" in rendered
    assert shot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")
def test_console_errors_would_be_seen_and_dark_mode_is_dark(demo):
    # the console check above is not vacuous: a page that logs an error is caught
    probe = demo.tmpdir("probe") / "probe.html"
    probe.write_text("<script>console.error('lifeboat probe')</script>")
    probe.chmod(0o644)
    assert console_errors(chromium(demo, "--dump-dom", f"file://{probe}").stderr)
    url = f"file://{demo.root / 'dashboard' / 'index.html'}"
    light, dark = demo.tmpdir("light") / "light.png", demo.tmpdir("dark") / "dark.png"
    chromium(demo, "--window-size=320,240", f"--screenshot={light}", url)
    chromium(demo, "--window-size=320,240", "--force-dark-mode", f"--screenshot={dark}", url)
    assert mean_brightness(light) > 180 > 80 > mean_brightness(dark)
