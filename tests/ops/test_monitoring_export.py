"""`schedule export --grafana/--prometheus-rules`: promtool accepts the rules, and every
metric the dashboard and the rules name is one a running daemon's /metrics exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lifeboat.assets.postgres.cluster import free_port
from tests.harness import LifeboatCli, PolicyBuilder
from tests.harness.wait import wait_until as wait_for
from tests.ops.test_daemon import lifeboat, metrics_answer

METRIC = re.compile(r"\blifeboat_[a-z_]+\b")


def export(policy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return LifeboatCli(policy, timeout=60).run("schedule", "export", *args, check=False)


def scrape(port: int) -> dict[str, list]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool missing: run 'make promtool'")
def test_rules_pass_promtool_and_name_only_metrics_the_daemon_exposes(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("hello")
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path}/repo", keyfile="backup.key")
        .data_class("standard", rpo="1h", rto="1h")
        .files("docs", [tmp_path / "docs"], schedule="*/2 * * * * *")
        .daemon(jitter="0s")
        .write(tmp_path / "lifeboat.toml")
    )
    out = tmp_path / "monitoring"
    proc = export(policy, "--grafana", str(out), "--prometheus-rules", str(out))
    assert proc.returncode == 0, proc.stderr
    plain, operator, dashboard = (
        out / "lifeboat-rules.yml",
        out / "lifeboat-prometheusrule.yaml",
        out / "lifeboat-dashboard.json",
    )
    check = subprocess.run(["promtool", "check", "rules", str(plain)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 12 rules found" in check.stdout
    resource = yaml.safe_load(operator.read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1" and resource["kind"] == "PrometheusRule"
    spec = tmp_path / "spec.yml"  # the Operator's spec.groups is a rule file of its own
    spec.write_text(yaml.safe_dump(resource["spec"]))
    assert subprocess.run(["promtool", "check", "rules", str(spec)], capture_output=True).returncode == 0
    model = json.loads(dashboard.read_text())
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in model["panels"])
    alerts = {r["alert"] for r in yaml.safe_load(plain.read_text())["groups"][0]["rules"]}
    assert {"LifeboatExposureOverRPO", "LifeboatDrillOverdue", "LifeboatBackupKeyTooOld"} <= alerts

    named = set(METRIC.findall(plain.read_text())) | set(METRIC.findall(dashboard.read_text()))
    assert len(named) >= 15
    LifeboatCli(policy).run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    port = free_port()
    daemon = lifeboat(policy, "daemon", "--max-seconds", "300", "--listen", f"127.0.0.1:{port}")
    try:
        wait_for(lambda: metrics_answer(port), "the daemon's metrics endpoint")
        # a backup has run and the status refresh after it has set the per-asset gauges
        wait_for(
            lambda: (
                bool(scrape(port)["lifeboat_backup_key_age_seconds"])
                and any(s.labels.get("task") == "backup:docs" for s in scrape(port)["lifeboat_job_failing"])
                and bool(scrape(port)["lifeboat_bytes_added"])
            ),
            "a backup and a status refresh",
        )
        exposed = scrape(port)
    finally:
        daemon.terminate()
        daemon.wait(60)
    assert named - set(exposed) == set()
    with_samples = {name for name, samples in exposed.items() if samples}
    targets = {
        "lifeboat_exposure_seconds",
        "lifeboat_rpo_target_seconds",
        "lifeboat_drill_interval_seconds",
        "lifeboat_backup_success_target_ratio",
        "lifeboat_backup_key_max_age_seconds",
    }
    assert targets <= with_samples
    failing = {s.labels["task"]: s.value for s in exposed["lifeboat_job_failing"]}
    assert failing["backup:docs"] == 0


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool missing: run 'make promtool'")
def test_the_overdue_drill_and_stale_status_rules_fire_on_the_daemons_series(tmp_path):
    """promtool runs the exported rules on the series the daemon publishes: an asset whose
    drill fell due (never drilled counts from its first backup: only the due date is
    published) warns an hour after; a status refresh failing, or stuck, for ten minutes is
    critical; and exposure over the RPO fires from the newest point's age when a stuck
    refresh holds the exposure gauge still. None fires before."""
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path}/repo", keyfile="backup.key")
        .data_class("standard", rpo="1h", rto="1h")
        .files("docs", [tmp_path])
        .write(tmp_path / "lifeboat.toml")
    )
    out = tmp_path / "monitoring"
    assert export(policy, "--prometheus-rules", str(out)).returncode == 0
    stale = (
        "the daemon's status refresh is failing or stuck: exposure and drill metrics are stale (see its log)"
    )
    series = [
        # promtool's time() starts at 0: the drill falls due at 1h
        _series('lifeboat_drill_due_timestamp_seconds{asset="docs"}', "3600x300"),
        _series("lifeboat_status_refresh_failing", "0x10 1x60"),
        # a refresh that hangs: the exposure gauge stands still at 10 minutes, the newest
        # restorable point (epoch 0) grows old past the 1h RPO
        _series('lifeboat_exposure_seconds{asset="docs"}', "600x300"),
        _series('lifeboat_last_success_timestamp_seconds{asset="docs"}', "0x300"),
        _series('lifeboat_rpo_target_seconds{asset="docs"}', "3600x300"),
        # a second daemon whose refresh hangs: never failing, its last refresh at 1m
        _series('lifeboat_status_refreshed_timestamp_seconds{instance="b"}', "60x60"),
        _series('lifeboat_status_refresh_failing{instance="b"}', "0x60"),
        # a third whose first refresh never ends: stale from its start, at 2m
        _series('lifeboat_status_refreshed_timestamp_seconds{instance="c"}', "0x60"),
        _series('lifeboat_daemon_started_timestamp_seconds{instance="c"}', "120x60"),
        _series('lifeboat_status_refresh_failing{instance="c"}', "0x60"),
        # a fourth that crashes and restarts every ten minutes
        _series(
            'lifeboat_daemon_started_timestamp_seconds{instance="d"}', "0x9 600x9 1200x9 1800x9 2400x9 3000x9"
        ),
    ]
    docs = {"asset": "docs"}
    checks = [
        _alerts("LifeboatDrillOverdue", "110m"),
        _alerts(
            "LifeboatDrillOverdue",
            "3h",
            (
                docs | {"severity": "warning"},
                "docs: a drill has been due for 2h 0m 0s (past its cadence, or never drilled)",
            ),
        ),
        _alerts("LifeboatExposureOverRPO", "50m"),
        _alerts(
            "LifeboatExposureOverRPO",
            "2h",
            (docs | {"severity": "critical"}, "docs: 2h 0m 0s of data at risk, beyond its RPO"),
        ),
        _alerts("LifeboatStatusStale", "15m"),
        _alerts(
            "LifeboatStatusStale",
            "25m",
            ({"severity": "critical"}, stale),  # failing since 10m, held 10m
            ({"severity": "critical", "instance": "c"}, stale),  # 10m after its start, held 10m
            ({"severity": "critical", "instance": "b"}, stale),  # 10m after its last refresh
        ),
        _alerts("LifeboatDaemonRestarting", "35m"),
        _alerts(
            "LifeboatDaemonRestarting",
            "55m",
            (
                {"severity": "warning", "instance": "d"},
                "the lifeboat daemon restarted 5 times in the last hour: see its log",
            ),
        ),
    ]
    cases = {
        "rule_files": ["lifeboat-rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}],
    }
    (out / "tests.yml").write_text(yaml.safe_dump(cases))
    command = ["promtool", "test", "rules", str(out / "tests.yml")]
    check = subprocess.run(command, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def _series(name: str, values: str) -> dict[str, str]:
    return {"series": name, "values": values}


def _alerts(name: str, at: str, *fired: tuple[dict[str, str], str]) -> dict[str, Any]:
    """promtool's check that alert ``name`` fires at ``at`` with exactly ``fired`` (labels
    and summary of each; none: it is silent)."""
    alerts = [
        {"exp_labels": {"component": "lifeboat", **labels}, "exp_annotations": {"summary": summary}}
        for labels, summary in fired
    ]
    return {"eval_time": at, "alertname": name, "exp_alerts": alerts}
