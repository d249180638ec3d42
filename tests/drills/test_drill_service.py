"""`lifeboat drill run` through the drill service: each kind's own checks reach the
evidence, and a drill that stops on an error is audited as failed, with the reason, and
still leaves evidence signed by the drill key `init` published."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import LifeboatCli, PolicyBuilder


def _drills(root: Path) -> list[dict]:
    lines = (root / ".lifeboat" / "audit.jsonl").read_text().splitlines()
    return [entry for entry in map(json.loads, lines) if entry["operation"] == "drill"]


def test_kind_checks_reach_the_evidence_and_a_stopped_drill_is_audited(tmp_path):
    root = tmp_path
    (root / "keys").mkdir()
    (root / "bucket" / "u1").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "bucket" / "u1" / "a.jpg").write_bytes(b"jpeg")
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
    lb = LifeboatCli(root / "lifeboat.toml", cwd=root)
    init = json.loads(lb.run("init", "--json").stdout)
    pinned = init["drill_key_fingerprint"]
    assert pinned.startswith("sha256:") and len(pinned) == 71
    for args in (["backup", "media"], ["backup", "conf"]):
        lb.run(*args)

    proc = lb.run("drill", "run", "outage", "--json", check=False)
    assert proc.returncode in (0, 1), proc.stderr  # the 1 s RPO target may be missed: judged, not stopped
    out = json.loads(proc.stdout)
    checks = {(c["asset"], c["name"]): c for c in out["checks"]}
    assert checks[("media", "object checksums")]["ok"], checks
    assert checks[("media", "object checksums")]["detail"] == "1 objects verified, 0 failed"
    assert checks[("conf", "file checksums")]["detail"] == "1 files verified"
    assert out["signing_key"] == pinned  # the key init published signs every drill
    [first] = _drills(root)
    assert first["outcome"] == out["verdict"] and first["details"]["bundle"] == out["bundle"]
    assert lb.run("evidence", "verify", out["bundle"], "--key", pinned).returncode == 0

    # the drill cannot even make its staging directory: it stops, and that failure is
    # signed evidence too (verdict fail, the reason in the bundle and the audit log)
    (root / ".lifeboat" / "drills").rename(root / "old-staging")
    (root / ".lifeboat" / "drills").write_text("not a directory")
    stopped = lb.run("drill", "run", "outage", "--json", check=False)
    assert stopped.returncode == 1 and "Traceback" not in stopped.stderr, stopped.stderr
    failed = json.loads(stopped.stdout)
    assert failed["verdict"] == "fail" and "drills" in failed["stopped"]
    assert any(r.startswith("drill stopped: ") for r in failed["reasons"])
    signed = json.loads((Path(failed["bundle"]) / "drill.json").read_text())
    assert signed["verdict"] == "fail" and signed["stopped"] == failed["stopped"]
    verified = lb.run("evidence", "verify", failed["bundle"], "--key", pinned)
    assert f"signed by {pinned}" in verified.stdout
    assert "FAIL" in (Path(failed["bundle"]) / "report.md").read_text()
    second = _drills(root)[1]
    assert second["outcome"] == "fail" and second["details"]["error"] == failed["stopped"]
    assert second["details"]["drill"] == "outage"
    # status shows the stopped drill as each asset's newest, not the drill before it (which
    # restored them): before, a drill that restored nothing was skipped
    seen = json.loads(lb.run("status", "--json", check=False).stdout)
    for asset in seen["assets"]:
        assert (asset["last_drill"], asset["last_drill_verdict"]) == (signed["started"], "fail")
        assert f"last drill outage failed ({signed['started'][:19]})" in asset["breaches"]
