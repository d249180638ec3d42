"""Achieved RPO for objects and files: versions/files the source had at the reference time
that the restore lacks, measured from the oldest such change; 0 when nothing changed
since the backup, however old the backup is."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.harness import LifeboatCli, PolicyBuilder


def lb(root: Path) -> LifeboatCli:
    return LifeboatCli(root / "lifeboat.toml", cwd=root)


def drill(root: Path) -> dict[str, Any]:
    proc = lb(root).run("drill", "run", "outage", "--json", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_unchanged_sources_pass_with_rpo_zero_and_a_backdated_change_is_measured(tmp_path):
    root = tmp_path
    (root / "keys").mkdir()
    (root / "bucket" / "u1").mkdir(parents=True)
    (root / "etc").mkdir()
    for i in range(5):
        (root / "bucket" / "u1" / f"{i}.jpg").write_bytes(os.urandom(100))
    (root / "etc" / "app.conf").write_text("port = 1\n")
    (
        PolicyBuilder()
        .repository(f"file://{root}/repo", recovery_key="keys/recovery.key")
        .data_class("tight", rpo="1s", rto="10m", retention={"last": 5})
        .objects("media", f"dir://{root}/bucket", cls="tight")
        .files("conf", [root / "etc"], cls="tight")
        .drill("outage", "full-outage", ["media", "conf"], evidence_dir=root / "evidence")
        .write(root / "lifeboat.toml")
    )
    # The backups are made a minute in the past (lifeboat's clock, as an old backup would
    # be): far older than the 1 s RPO target, so a pass below is RPO 0, not a young backup.
    past = lb(root).at(-60)
    for args in (["init"], ["backup", "media"], ["backup", "conf"]):
        past.run(*args)
    newest_backup = max(s["time"] for s in lb(root).json("snapshots"))
    assert datetime.now(UTC) - datetime.fromisoformat(newest_backup) > timedelta(seconds=50)

    out = drill(root)
    assert out["verdict"] == "pass", out["reasons"]
    assert out["achieved"]["media"]["rpo_s"] == 0.0 and out["achieved"]["conf"]["rpo_s"] == 0.0
    assert "nothing lost" in out["rpo_methods"]["media"] and "nothing lost" in out["rpo_methods"]["conf"]

    # Changes after the backup, backdated an hour: that hour of changes is what is lost.
    hour_ago = time.time() - 3600
    changed = root / "bucket" / "u1" / "new.jpg"
    changed.write_bytes(b"new")
    os.utime(changed, (hour_ago, hour_ago))
    conf = root / "etc" / "app.conf"
    conf.write_text("port = 2\n")
    os.utime(conf, (hour_ago - 60, hour_ago - 60))
    out = drill(root)
    assert out["verdict"] == "fail"
    media, files = out["achieved"]["media"]["rpo_s"], out["achieved"]["conf"]["rpo_s"]
    assert 3600 <= media < 3600 + 120 and 3660 <= files < 3660 + 120, out["achieved"]
    assert "1 of 6 object versions" in out["rpo_methods"]["media"], out["rpo_methods"]
    assert "1 of 1 files" in out["rpo_methods"]["conf"], out["rpo_methods"]
    assert any(r.startswith("media: RPO") for r in out["reasons"]), out["reasons"]
