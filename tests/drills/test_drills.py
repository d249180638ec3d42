"""Drills on the sandbox: evidence that verifies, tampering detected, broken backups fail
with the right reason and a corrective action, cross-asset references checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


def bundles(demo, name: str) -> list[Path]:
    return sorted((demo.root / "evidence").glob(f"*-{name}*"))


def test_demo_full_outage_passes_and_evidence_verifies(demo):
    assert "full-outage drill: PASS" in demo.output
    bundle = bundles(demo, "full-outage")[0]
    data = json.loads((bundle / "drill.json").read_text())
    assert data["verdict"] == "pass" and set(data["achieved"]) == {"maindb", "media", "platform-keys"}
    assert all(c["ok"] for c in data["checks"])
    assert any(c["name"].startswith("maindb rows -> media") for c in data["checks"])
    assert demo.run("evidence", "verify", str(bundle)).returncode == 0


def test_any_tampering_with_a_bundle_is_detected(demo):
    tmp_path = demo.tmpdir("tamper")
    original = bundles(demo, "full-outage")[0]
    files = [p for p in original.rglob("*") if p.is_file()]
    for victim in files:
        copy = tmp_path / f"b-{victim.name}"
        shutil.copytree(original, copy)
        shutil.chown(copy, demo.user) if demo.user else None
        target = copy / victim.relative_to(original)
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
        proc = demo.run("evidence", "verify", str(copy), check=False)
        assert proc.returncode == 1, f"flip in {victim.name} went unnoticed"
    copy = tmp_path / "figure"
    shutil.copytree(original, copy)
    shutil.chown(copy, demo.user) if demo.user else None
    drill = json.loads((copy / "drill.json").read_text())
    drill["total_rto_s"] = 1.0
    (copy / "drill.json").write_text(json.dumps(drill, indent=2, sort_keys=True) + "\n")
    proc = demo.run("evidence", "verify", str(copy), check=False)
    assert proc.returncode == 1 and "drill.json was modified" in proc.stdout


@pytest.mark.parametrize("scenario", ["db-pitr", "media-rollback", "keys-recovery"])
def test_scenario_passes(demo, scenario):
    out = json.loads(
        demo.run(
            "drill",
            "run",
            scenario,
            "--share",
            str(demo.root / "shares" / "alice.share"),
            "--share",
            str(demo.root / "shares" / "carol.share"),
            "--json",
        ).stdout
    )
    assert out["verdict"] == "pass", out["reasons"]
    assert demo.run("evidence", "verify", out["bundle"]).returncode == 0
    assert not Path(out["staging"]).exists()  # staging removed after a passing drill


def test_cross_asset_check_catches_a_missing_object(demo):
    policy = demo.policy.read_text()
    broken = policy.replace(
        'query = "select object_key, sha256 from attachments"',
        "query = \"select object_key, sha256 from attachments union all select 'u1/lost.jpg', null\"",
    )
    alt = demo.root / "broken-crosscheck.toml"
    alt.write_text(broken)
    shutil.chown(alt, demo.user) if demo.user else None
    proc = demo.run(
        "--config",
        str(alt),
        "drill",
        "run",
        "full-outage",
        "--share",
        str(demo.root / "shares" / "alice.share"),
        "--share",
        str(demo.root / "shares" / "bob.share"),
        "--json",
        check=False,
    )
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    failed = [c for c in out["checks"] if not c["ok"]]
    assert len(failed) == 1 and "u1/lost.jpg" in failed[0]["detail"]
    assert not out["kept"] and not Path(out["staging"]).exists()  # removed on failure too, unless --keep


def test_missing_wal_fails_the_drill_with_the_segment_named_and_opens_an_action(demo, tmp_path):
    wal_dir = demo.root / "repository" / "refs" / "wal" / "maindb"
    segments = sorted(p for p in wal_dir.iterdir() if len(p.name) == 24)
    assert len(segments) >= 3
    victim = segments[len(segments) // 2]
    saved = tmp_path / victim.name
    shutil.copy2(victim, saved)
    victim.unlink()
    try:
        proc = demo.run(
            "drill",
            "run",
            "db-pitr",
            "--share",
            str(demo.root / "shares" / "alice.share"),
            "--share",
            str(demo.root / "shares" / "bob.share"),
            "--json",
            check=False,
        )
        assert proc.returncode == 1
        out = json.loads(proc.stdout)
        assert any(victim.name in r for r in out["reasons"]), out["reasons"]
        assert (
            demo.run("evidence", "verify", out["bundle"]).returncode == 0
        )  # a complete, signed failed bundle
        assert json.loads((Path(out["bundle"]) / "drill.json").read_text())["verdict"] == "fail"
        actions = json.loads(demo.run("actions", "list", "--json").stdout)
        assert any(victim.name in a["detail"] and a["evidence"] == out["bundle"] for a in actions)
    finally:
        shutil.copy2(saved, victim)
        if demo.user:
            shutil.chown(victim, demo.user)
        shutil.rmtree(demo.root / ".lifeboat" / "drills", ignore_errors=True)


def test_drill_list_shows_last_results(demo):
    rows = json.loads(demo.run("drill", "list", "--json").stdout)
    assert {r["name"] for r in rows} == {"full-outage", "db-pitr", "media-rollback", "keys-recovery"}
    assert next(r for r in rows if r["name"] == "full-outage")["last_verdict"] in ("pass", "fail")


def test_corrupted_object_chunks_fail_the_media_drill(demo, tmp_path):
    data = demo.root / "repository" / "data"
    saved = tmp_path / "data"
    shutil.copytree(data, saved)
    try:
        for pack in data.rglob("*"):
            if pack.is_file():
                pack.chmod(0o644)
                body = bytearray(pack.read_bytes())
                body[len(body) // 2] ^= 0xFF
                pack.write_bytes(bytes(body))
        proc = demo.run(
            "drill",
            "run",
            "media-rollback",
            "--share",
            str(demo.root / "shares" / "alice.share"),
            "--share",
            str(demo.root / "shares" / "bob.share"),
            "--json",
            check=False,
        )
        assert proc.returncode == 1
        out = json.loads(proc.stdout)
        assert out["verdict"] == "fail" and any("media" in r for r in out["reasons"])
        assert any("authentication" in r or "failed" in r for r in out["reasons"]), out["reasons"]
        assert demo.run("evidence", "verify", out["bundle"]).returncode == 0
    finally:
        shutil.rmtree(data)
        shutil.copytree(saved, data)
        if demo.user:
            for path in [data, *data.rglob("*")]:
                shutil.chown(path, demo.user)
