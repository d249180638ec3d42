"""Drills on the sandbox: evidence that verifies, tampering detected, broken backups fail
with the right reason and a corrective action, cross-asset references checked."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest


def bundles(demo, name: str) -> list[Path]:
    return sorted((demo.root / "evidence").glob(f"*-{name}*"))


def pinned(demo) -> str:
    """The drill key fingerprint the demo printed (what an auditor pins)."""
    found = re.search(r"--key (sha256:[0-9a-f]{64})", demo.output)
    assert found, demo.output
    return found.group(1)


def test_demo_full_outage_passes_and_evidence_verifies(demo):
    assert "full-outage drill: PASS" in demo.output
    bundle = bundles(demo, "full-outage")[0]
    data = json.loads((bundle / "drill.json").read_text())
    assert data["verdict"] == "pass" and set(data["achieved"]) == {"maindb", "media", "platform-keys"}
    assert all(c["ok"] for c in data["checks"])
    assert any(c["name"].startswith("maindb rows -> media") for c in data["checks"])
    assert demo.run("evidence", "verify", str(bundle), "--key", pinned(demo)).returncode == 0
    # without a pin: the repository's root-signed record, the root key derived from the shares
    found = demo.run("evidence", "verify", str(bundle), *demo.shares("alice", "bob"))
    assert f"signed by {pinned(demo)}" in found.stdout and "root key from the recovery key" in found.stdout


def test_the_bundle_records_what_an_auditor_asks_for(demo):
    bundle = bundles(demo, "full-outage")[0]
    data = json.loads((bundle / "drill.json").read_text())
    report = (bundle / "report.md").read_text()
    assert data["signing_key"] == pinned(demo) and pinned(demo) in report
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", data["policy_digest"]) and data["policy_digest"] in report
    # the demo opened the recovery key with two custodians' shares: their names, nothing more
    assert data["key_access"] == {"via": "shares", "custodians": ["alice", "bob"]}
    assert "shares of alice, bob" in report
    assert set(data["snapshots"]) == {"maindb", "media", "platform-keys"}
    for asset, snap in data["snapshots"].items():
        assert len(snap["id"]) == 64 and snap["id"] in report, (asset, snap)
        assert datetime.fromisoformat(snap["time"]) <= datetime.fromisoformat(data["started"])
    wal = data["wal"]["maindb"]
    assert re.fullmatch(r"[0-9A-F]{24}", wal["wal_first"]) and wal["wal_first"] <= wal["wal_last"]
    assert wal["wal_segments"] >= 1 and f"{wal['wal_first']} .. {wal['wal_last']}" in report
    target = data["staging_target"]
    assert target["host"] == data["host"] and target["path"] == data["staging"]
    assert isinstance(target["ports"]["maindb"], int) and f"maindb port {target['ports']['maindb']}" in report
    assert data["operator"].endswith("@" + data["host"]) and data["operator"] in report
    # the drill's audit entries, by the ids their repository copies carry: two share uses, the drill
    log = [json.loads(line) for line in next(demo.root.rglob("audit.jsonl")).read_text().splitlines()]
    by_id = {f"{e['seq']:012d}-{e['hash'][:16]}": e for e in log}
    entries = [by_id[i] for i in data["audit_entries"]]
    # alice and bob opened the recovery key, then the key-material escrow key (platform-keys)
    assert [e["operation"] for e in entries] == ["key-access"] * 4 + ["drill"]
    assert [(e["details"].get("key"), e["details"]["custodian"]) for e in entries[:4]] == [
        (None, "alice"),
        (None, "bob"),
        ("key-material escrow", "alice"),
        ("key-material escrow", "bob"),
    ]
    assert entries[-1]["details"]["bundle"] == str(bundle) and all(i in report for i in data["audit_entries"])
    # secrets never: no share's words in any file of the bundle
    words = {w for name in ("alice", "bob", "carol") for w in _share_words(demo, name)}
    assert words, "the shares hold mnemonic words"
    for path in (p for p in bundle.rglob("*") if p.is_file()):
        text = path.read_text(errors="replace")
        assert not any(w in text for w in words), f"a share's words in {path.name}"


def _share_words(demo, name: str) -> set[str]:
    """The share's words in runs of four (one word alone could be English in a report)."""
    words = (demo.root / "shares" / f"{name}.share").read_text().strip().splitlines()[-1].split()
    assert len(words) >= 20, "an unencrypted SLIP-39 share"
    return {" ".join(words[i : i + 4]) for i in range(0, len(words) - 3, 4)}


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
        proc = demo.run("evidence", "verify", str(copy), "--key", pinned(demo), check=False)
        assert proc.returncode == 1, f"flip in {victim.name} went unnoticed"
    copy = tmp_path / "figure"
    shutil.copytree(original, copy)
    shutil.chown(copy, demo.user) if demo.user else None
    drill = json.loads((copy / "drill.json").read_text())
    drill["total_rto_s"] = 1.0
    (copy / "drill.json").write_text(json.dumps(drill, indent=2, sort_keys=True) + "\n")
    proc = demo.run("evidence", "verify", str(copy), "--key", pinned(demo), check=False)
    assert proc.returncode == 1 and "drill.json was modified" in proc.stdout


@pytest.mark.parametrize("scenario", ["db-pitr", "media-rollback", "keys-recovery"])
def test_scenario_passes(demo, scenario):
    out = json.loads(
        demo.run(
            "drill",
            "run",
            scenario,
            *demo.shares("alice", "carol"),
            "--json",
        ).stdout
    )
    assert out["verdict"] == "pass", out["reasons"]
    assert demo.run("evidence", "verify", out["bundle"], "--key", pinned(demo)).returncode == 0
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
        *demo.shares("alice", "bob"),
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
            *demo.shares("alice", "bob"),
            "--json",
            check=False,
        )
        assert proc.returncode == 1
        out = json.loads(proc.stdout)
        assert any(victim.name in r for r in out["reasons"]), out["reasons"]
        assert (
            demo.run("evidence", "verify", out["bundle"], "--key", pinned(demo)).returncode == 0
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
            *demo.shares("alice", "bob"),
            "--json",
            check=False,
        )
        assert proc.returncode == 1
        out = json.loads(proc.stdout)
        assert out["verdict"] == "fail" and any("media" in r for r in out["reasons"])
        assert any("authentication" in r or "failed" in r for r in out["reasons"]), out["reasons"]
        assert demo.run("evidence", "verify", out["bundle"], "--key", pinned(demo)).returncode == 0
    finally:
        shutil.rmtree(data)
        shutil.copytree(saved, data)
        if demo.user:
            for path in [data, *data.rglob("*")]:
                shutil.chown(path, demo.user)
