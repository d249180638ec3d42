"""The first-use papercuts: what a new operator reads must say where values come from and
what to do next."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.harness import LifeboatCli, PolicyBuilder


def lifeboat(policy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return LifeboatCli(policy, timeout=120).run(*args, check=False)


def builder(tmp_path: Path, **repository: str) -> PolicyBuilder:
    """Two files assets in production mode: one plain class, one with a long retention."""
    (tmp_path / "etc").mkdir()
    return (
        PolicyBuilder(mode="production")
        .repository(f"file://{tmp_path}/repo", **repository)
        .data_class("std", rpo="1d", rto="1h", retention={"last": 3})
        .data_class("strict", rpo="1d", rto="1h", retention={"daily": 14, "min_days": 90})
        .files("etc", [tmp_path / "etc"], cls="std", schedule="0 1 * * *")
        .files("ledger", [tmp_path / "etc"], cls="strict", schedule="0 2 * * *")
    )


def write(tmp_path: Path) -> Path:
    return builder(tmp_path).write(tmp_path / "lifeboat.toml")


def test_policy_check_shows_effective_retention_and_where_each_value_comes_from(tmp_path):
    policy = write(tmp_path)
    proc = lifeboat(policy, "policy", "check", "--offline")
    assert proc.returncode == 0, proc.stderr
    etc = next(line for line in proc.stdout.splitlines() if "│ etc " in line)
    # `{ last = 3 }` silently kept 7 daily, 4 weekly, 12 monthly: now it says so
    assert "last 3 (classes.std); daily 7, weekly 4, monthly 12 (default); min 35d (mode production)" in etc
    report = json.loads(lifeboat(policy, "policy", "check", "--offline", "--json").stdout)
    ledger = next(a for a in report["assets"] if a["asset"] == "ledger")["retention_sources"]
    assert ledger["daily"] == {"value": 14, "from": "classes.strict"}
    assert ledger["monthly"] == {"value": 12, "from": "default"}
    assert ledger["min_days"] == {"value": 90, "from": "classes.strict"}  # stricter than the mode


def test_systemd_export_covers_every_job_runs_as_a_user_with_credentials_and_prints_install_steps(tmp_path):
    policy = (
        builder(tmp_path, recovery_key="r.key")
        .table("assets", "ledger", window="01:00-05:00")  # ledger: backups only inside the window
        .asset("db", "postgres", "std", dsn="host=/tmp", stream=True)
        .drill("monthly", "full-outage", ["etc"], every="30d")
        .write(tmp_path / "lifeboat.toml")
    )
    units = tmp_path / "units"
    proc = lifeboat(policy, "schedule", "export", "--systemd", str(units), "--user", "backup")
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in units.iterdir()}
    for unit in ("backup-etc", "backup-ledger", "check", "check-read-data", "retention", "drill-monthly"):
        assert {f"lifeboat-{unit}.service", f"lifeboat-{unit}.timer"} <= names, unit
    assert "lifeboat-wal-stream-db.service" in names
    for service in units.glob("*.service"):
        body = service.read_text()
        assert "User=backup\n" in body and "EnvironmentFile=-/etc/lifeboat/lifeboat.env\n" in body, service
    assert (
        "Persistent=false" in (units / "lifeboat-backup-ledger.timer").read_text()
    )  # never outside its window
    assert "Persistent=true" in (units / "lifeboat-backup-etc.timer").read_text()
    assert "OnCalendar=monthly" in (units / "lifeboat-drill-monthly.timer").read_text()
    retention = (units / "lifeboat-retention.service").read_text()
    assert retention.index(" forget\n") < retention.index(" prune\n")
    enable = next(line for line in proc.stdout.splitlines() if "systemctl enable --now" in line)
    assert "lifeboat-drill-monthly.timer" in enable and "lifeboat-wal-stream-db.service" in enable
    assert "systemctl daemon-reload" in proc.stdout and "install -m 0600 /dev/null" in proc.stdout
    verify = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units.iterdir())], capture_output=True, text=True
    )
    assert "Failed to parse" not in verify.stderr and "Unknown key" not in verify.stderr, verify.stderr


def test_init_advises_on_shares_and_keys_restore_counts_what_it_verified(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    (tmp_path / "tls").mkdir()
    for name in ("a.key", "b.key"):
        key = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (tmp_path / "tls" / name).write_bytes(key)
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path}/repo")
        .data_class("keys", rpo="1d", rto="1h")
        .keys("tls", [tmp_path / "tls"], cls="keys")
        .table("escrow", threshold=2, custodians=["alice", "bob", "carol"])
        .write(tmp_path / "lifeboat.toml")
    )
    init = lifeboat(policy, "init", "--shares-out", str(tmp_path / "shares"))
    assert init.returncode == 0, init.stderr
    advice = next(line for line in init.stdout.splitlines() if line.startswith("next:"))
    assert "hand each custodian" in advice and f"delete {tmp_path / 'shares'}" in advice
    assert lifeboat(policy, "backup", "tls").returncode == 0
    shares = [str(tmp_path / "shares" / f"{who}.share") for who in ("alice", "bob")]
    restored = tmp_path / "restored"
    proc = lifeboat(
        policy, "restore", "tls", "--target", str(restored), "--share", shares[0], "--share", shares[1]
    )
    assert proc.returncode == 0, proc.stderr
    assert "0 files verified" not in proc.stdout and "0 dirs" not in proc.stdout  # no contradictory line
    assert "2 of 2 fingerprints match the backup" in proc.stdout
    assert proc.stdout.count("  ok ") == 2


def test_human_output_uses_iec_units(tmp_path):
    import re

    policy = write(tmp_path)
    (tmp_path / "etc" / "data").write_bytes(bytes(range(256)) * 600)  # 150 KiB
    assert lifeboat(policy, "init", "--recovery-key-out", str(tmp_path / "r.key")).returncode == 0
    proc = lifeboat(policy, "backup", "etc")
    assert proc.returncode == 0, proc.stderr
    assert "150.0 KiB" in proc.stdout
    assert re.search(r"\(\d+(\.\d)? (B|KiB|MiB|GiB)/s\)", proc.stdout), proc.stdout  # not "0 MB/s"
    assert not re.search(r"\d (MB|KB|GB)\b", proc.stdout)


def test_a_misspelt_key_is_named_before_the_field_it_left_missing(tmp_path):
    policy = write(tmp_path)
    policy.write_text(policy.read_text().replace('paths = ["', 'pahts = ["', 1))
    proc = lifeboat(policy, "policy", "check", "--offline")
    assert proc.returncode == 2
    assert "assets.etc.pahts: unknown key" in proc.stderr  # not "assets.etc.paths: Field required"


def test_kubernetes_export_has_the_same_jobs_as_systemd(tmp_path):
    import yaml
    from croniter import croniter

    policy = (
        builder(tmp_path, keyfile="k", recovery_key="r.key")
        .drill("monthly", "full-outage", ["etc"], every="30d")
        .write(tmp_path / "lifeboat.toml")
    )
    out = tmp_path / "k8s"
    proc = lifeboat(policy, "schedule", "export", "--kubernetes", str(out))
    assert proc.returncode == 0, proc.stderr
    backups = list(yaml.safe_load_all((out / "lifeboat-cronjobs.yaml").read_text()))
    assert {d["metadata"]["name"] for d in backups} == {"lifeboat-backup-etc", "lifeboat-backup-ledger"}
    jobs = {
        d["metadata"]["name"]: d for d in yaml.safe_load_all((out / "lifeboat-maintenance.yaml").read_text())
    }
    assert set(jobs) == {
        "lifeboat-check",
        "lifeboat-check-read-data",
        "lifeboat-forget",
        "lifeboat-prune",
        "lifeboat-drill-monthly",
    }
    for job in jobs.values():
        assert croniter.is_valid(job["spec"]["schedule"]) and job["spec"]["concurrencyPolicy"] == "Forbid"
        container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["envFrom"] == [{"secretRef": {"name": "lifeboat-credentials", "optional": True}}]
    assert jobs["lifeboat-drill-monthly"]["spec"]["schedule"] == "0 5 1 * *"
    assert jobs["lifeboat-forget"]["spec"]["schedule"] != jobs["lifeboat-prune"]["spec"]["schedule"]
