"""The dashboard renders offline in a real browser: charts and tables are there."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest


def test_dashboard_is_self_contained(demo):
    page = (demo.root / "dashboard" / "index.html").read_text()
    assert not re.search(r"(src|href)=\"https?://", page)  # no CDN, nothing fetched
    for chart in ("exposure", "growth", "success", "rto-maindb", "rto-media", "rto-platform-keys"):
        assert f'id="{chart}"' in page
    assert "<polyline" in page and "<rect" in page
    for table in ("assets", "drills", "actions"):
        assert f'id="{table}"' in page
    assert "full-outage" in page


def test_report_command_writes_the_dashboard(demo):
    out = demo.tmpdir("report")
    demo.run("report", "--out", str(out))
    assert (out / "index.html").exists()


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")
def test_chromium_renders_the_dashboard(demo):
    shot = demo.tmpdir("screenshot") / "dashboard.png"
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
        f"--user-data-dir={shot.parent / 'profile'}",
        "--window-size=1280,1600",
        f"--screenshot={shot}",
        f"file://{demo.root / 'dashboard' / 'index.html'}",
    ]
    dom = ["chromium", *cmd[1:-2], "--dump-dom", cmd[-1]]
    demo.shell(cmd, check=True)
    assert shot.exists() and shot.stat().st_size > 20_000
    rendered = demo.shell(dom, check=True).stdout
    assert rendered.count("<svg") >= 4 and "maindb" in rendered
    proc = subprocess.run(["file", str(shot)], capture_output=True, text=True)
    assert "PNG" in proc.stdout or shot.read_bytes()[:4] == b"\x89PNG"
