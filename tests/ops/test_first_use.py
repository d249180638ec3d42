"""The first-use papercuts: what a new operator reads must say where values come from and
what to do next."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

POLICY = """
[repository]
url = "file://{root}/repo"
keyfile = "keys/backup.key"

[deployment]
mode = "production"

[classes.std]
rpo = "1d"
rto = "1h"
retention = {{ last = 3 }}

[classes.strict]
rpo = "1d"
rto = "1h"
retention = {{ daily = 14, min_days = 90 }}

[assets.etc]
kind = "files"
class = "std"
paths = ["{root}/etc"]
schedule = "0 1 * * *"

[assets.ledger]
kind = "files"
class = "strict"
paths = ["{root}/etc"]
schedule = "0 2 * * *"
"""


def lifeboat(policy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lifeboat", "--config", str(policy), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def write(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    policy = tmp_path / "lifeboat.toml"
    policy.write_text(POLICY.format(root=tmp_path))
    return policy


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
    policy = write(tmp_path)
    with policy.open("a") as fh:
        fh.write(
            'window = "01:00-05:00"\n'  # ledger: backups only inside the window
            '\n[assets.db]\nkind = "postgres"\nclass = "std"\ndsn = "host=/tmp"\nstream = true\n'
            '\n[drills.monthly]\nscenario = "full-outage"\nassets = ["etc"]\nevery = "30d"\n'
        )
    text = policy.read_text().replace(
        'keyfile = "keys/backup.key"', 'keyfile = "keys/backup.key"\nrecovery_key = "r.key"'
    )
    policy.write_text(text)
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


KEYS_POLICY = """
[repository]
url = "file://{root}/repo"
keyfile = "keys/backup.key"

[deployment]
mode = "development"

[classes.keys]
rpo = "1d"
rto = "1h"

[assets.tls]
kind = "keys"
class = "keys"
paths = ["{root}/tls"]

[escrow]
threshold = 2
custodians = ["alice", "bob", "carol"]
"""


def test_init_advises_on_shares_and_keys_restore_counts_what_it_verified(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    (tmp_path / "tls").mkdir()
    for name in ("a.key", "b.key"):
        key = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (tmp_path / "tls" / name).write_bytes(key)
    policy = tmp_path / "lifeboat.toml"
    policy.write_text(KEYS_POLICY.format(root=tmp_path))
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

    policy = write(tmp_path)
    text = policy.read_text().replace('keyfile = "keys/backup.key"', 'keyfile = "k"\nrecovery_key = "r.key"')
    policy.write_text(
        text + '\n[drills.monthly]\nscenario = "full-outage"\nassets = ["etc"]\nevery = "30d"\n'
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
