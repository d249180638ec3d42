"""A Grafana dashboard and Prometheus alert rules over the daemon's /metrics (see
ops/metrics.py): what every team would otherwise write by hand.

Every comparison is against a target gauge the daemon exports next to the measurement
(`lifeboat_rpo_target_seconds`, ...), so the rules need no copy of the policy.
Lifeboat's own `job` label on lifeboat_job_duration_seconds collides with Prometheus's
target label: with the default `honor_labels: false` it arrives as `exported_job`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ASSET = 'asset=~"$asset"'
RISK = f"lifeboat_exposure_seconds{{{ASSET}}} / lifeboat_rpo_target_seconds"


def _rule(name: str, expr: str, severity: str, summary: str, for_: str = "5m") -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, "component": "lifeboat"},
        "annotations": {"summary": summary},
    }


def alert_rules() -> list[dict[str, Any]]:
    """Exposure over RPO, drills over RTO or overdue, failing backups and checks, archive lag,
    key age, and a daemon whose status is stale or absent. (No copy-lag rule: lifeboat exports
    no replication-lag metric.)"""
    return [
        _rule(
            # the newest restorable point's age too: it goes on growing while a status refresh
            # hangs, when the exposure gauge cannot
            "LifeboatExposureOverRPO",
            "lifeboat_exposure_seconds > lifeboat_rpo_target_seconds "
            "or time() - lifeboat_last_success_timestamp_seconds > lifeboat_rpo_target_seconds",
            "critical",
            "{{ $labels.asset }}: {{ $value | humanizeDuration }} of data at risk, beyond its RPO",
        ),
        _rule(
            "LifeboatDrillOverRTO",
            "lifeboat_last_drill_rto_seconds > lifeboat_rto_target_seconds",
            "critical",
            "{{ $labels.asset }}: the last drill took {{ $value | humanizeDuration }}, beyond its RTO",
            for_="0m",
        ),
        _rule(
            # due counts from the first backup for an asset never drilled, which
            # lifeboat_last_drill_timestamp_seconds (absent then) cannot say
            "LifeboatDrillOverdue",
            "time() - lifeboat_drill_due_timestamp_seconds > 0",
            "warning",
            "{{ $labels.asset }}: a drill has been due for {{ $value | humanizeDuration }} "
            "(past its cadence, or never drilled)",
            for_="1h",
        ),
        _rule(
            "LifeboatBackupSuccessBelowTarget",
            "lifeboat_backup_success_ratio < lifeboat_backup_success_target_ratio",
            "warning",
            "{{ $labels.asset }}: backup success rate {{ $value | humanizePercentage }} is below target",
            for_="15m",
        ),
        _rule(
            "LifeboatBackupFailing",
            'lifeboat_job_failing{task=~"backup:.*"} == 1',
            "critical",
            "{{ $labels.task }} failed after all its retries",
            for_="0m",
        ),
        _rule(
            "LifeboatWalArchiveLag",
            "lifeboat_wal_archive_lag_seconds > 0.5 * lifeboat_rpo_target_seconds",
            "warning",
            "{{ $labels.asset }}: the oldest unarchived WAL is {{ $value | humanizeDuration }} old",
        ),
        _rule(
            "LifeboatRepositoryCheckFailing",
            'lifeboat_job_failing{task=~"check|check-read-data"} == 1',
            "critical",
            "repository {{ $labels.task }} found problems: run 'lifeboat check'",
            for_="0m",
        ),
        _rule(
            "LifeboatBackupKeyTooOld",
            "lifeboat_backup_key_age_seconds > lifeboat_backup_key_max_age_seconds",
            "warning",
            "the backup key is {{ $value | humanizeDuration }} old: run 'lifeboat keys rotate'",
            for_="1h",
        ),
        _rule(
            # failing (it raises), or stuck (a refresh that hangs raises nothing): the last
            # one that worked (the daemon's start, before the first) is too old
            "LifeboatStatusStale",
            "lifeboat_status_refresh_failing == 1 or time() - ("
            "lifeboat_status_refreshed_timestamp_seconds > 0 or lifeboat_daemon_started_timestamp_seconds"
            ") > 600",
            "critical",
            "the daemon's status refresh is failing or stuck: exposure and drill metrics are stale "
            "(see its log)",
            for_="10m",
        ),
        _rule(
            "LifeboatStatusBreach",
            "lifeboat_status_breaches > 0",
            "warning",
            "{{ $labels.asset }}: 'lifeboat status' reports {{ $value }} breach(es): run it for the details",
            for_="15m",
        ),
        _rule(
            # a daemon that crashes and restarts (Restart=always) never stays up long enough
            # for the rules that wait
            "LifeboatDaemonRestarting",
            "changes(lifeboat_daemon_started_timestamp_seconds[1h]) > 3",
            "warning",
            "the lifeboat daemon restarted {{ $value }} times in the last hour: see its log",
            for_="0m",
        ),
        _rule(
            "LifeboatNotReporting",
            "absent(lifeboat_rpo_target_seconds)",
            "critical",
            "no lifeboat daemon is reporting: backups may not be running",
            for_="15m",
        ),
    ]


def prometheus_rules(out: Path) -> list[Path]:
    """A plain rule file (rule_files:) and a PrometheusRule for the Prometheus Operator."""
    out.mkdir(parents=True, exist_ok=True)
    groups = [{"name": "lifeboat", "rules": alert_rules()}]
    plain = out / "lifeboat-rules.yml"
    plain.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    operator = out / "lifeboat-prometheusrule.yaml"
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "lifeboat", "labels": {"app.kubernetes.io/name": "lifeboat"}},
        "spec": {"groups": groups},
    }
    operator.write_text(yaml.safe_dump(resource, sort_keys=False))
    return [plain, operator]


def _target(expr: str, legend: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": legend[:20]}


def _panel(
    title: str,
    targets: list[dict[str, Any]],
    unit: str,
    x: int,
    y: int,
    kind: str = "timeseries",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": 12, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{**t, "refId": chr(65 + i)} for i, t in enumerate(targets)],
        **extra,
    }


def dashboard_model() -> dict[str, Any]:
    panels = [
        _panel(
            "Risk: exposure / RPO (sorted, above 100% is a breach)",
            [
                _target(
                    f"sort_desc(lifeboat_exposure_seconds{{{ASSET}}} / lifeboat_rpo_target_seconds)",
                    "{{asset}}",
                )
            ],
            "percentunit",
            0,
            0,
            kind="bargauge",
            options={"orientation": "horizontal", "displayMode": "gradient"},
        ),
        _panel(
            "Exposure vs RPO",
            [
                _target(f"lifeboat_exposure_seconds{{{ASSET}}}", "{{asset}} exposure"),
                _target(f"lifeboat_rpo_target_seconds{{{ASSET}}}", "{{asset}} RPO"),
            ],
            "s",
            12,
            0,
        ),
        _panel(
            "Last drill RTO vs target",
            [
                _target(f"lifeboat_last_drill_rto_seconds{{{ASSET}}}", "{{asset}} achieved"),
                _target(f"lifeboat_rto_target_seconds{{{ASSET}}}", "{{asset}} RTO"),
            ],
            "s",
            0,
            8,
        ),
        _panel(
            "Time since last drill vs cadence",
            [
                _target(f"time() - lifeboat_last_drill_timestamp_seconds{{{ASSET}}}", "{{asset}} since"),
                _target(f"lifeboat_drill_interval_seconds{{{ASSET}}}", "{{asset}} cadence"),
            ],
            "s",
            12,
            8,
        ),
        _panel(
            "Backup success (30 days) vs target",
            [
                _target(f"lifeboat_backup_success_ratio{{{ASSET}}}", "{{asset}}"),
                _target(f"lifeboat_backup_success_target_ratio{{{ASSET}}}", "{{asset}} target"),
            ],
            "percentunit",
            0,
            16,
        ),
        _panel(
            "Backup duration",
            [_target(f'lifeboat_job_duration_seconds{{{ASSET}, exported_job=~"backup:.*"}}', "{{asset}}")],
            "s",
            12,
            16,
        ),
        _panel(
            "Bytes stored by the last backup; repository size",
            [
                _target(f"lifeboat_bytes_added{{{ASSET}}}", "{{asset}} added"),
                _target("lifeboat_repository_bytes", "repository"),
            ],
            "bytes",
            0,
            24,
        ),
        _panel(
            "WAL archive lag and pending segments",
            [
                _target(f"lifeboat_wal_archive_lag_seconds{{{ASSET}}}", "{{asset}} lag"),
                _target(f"lifeboat_wal_pending_segments{{{ASSET}}}", "{{asset}} pending"),
            ],
            "s",
            12,
            24,
        ),
        _panel(
            "Failing jobs, open corrective actions",
            [
                _target("lifeboat_job_failing == 1", "{{task}}"),
                _target("lifeboat_open_corrective_actions", "open actions"),
            ],
            "short",
            0,
            32,
            kind="stat",
        ),
        _panel(
            "Backup key age vs maximum",
            [
                _target("lifeboat_backup_key_age_seconds", "age"),
                _target("lifeboat_backup_key_max_age_seconds", "maximum"),
            ],
            "s",
            12,
            32,
        ),
    ]
    for i, panel in enumerate(panels, 1):
        panel["id"] = i
    return {
        "title": "lifeboat: recoverability",
        "uid": "lifeboat",
        "tags": ["lifeboat", "backup"],
        "schemaVersion": 39,
        "time": {"from": "now-7d", "to": "now"},
        "refresh": "1m",
        "templating": {
            "list": [
                {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"},
                {
                    "name": "asset",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": "label_values(lifeboat_rpo_target_seconds, asset)",
                    "refresh": 2,
                    "multi": True,
                    "includeAll": True,
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "panels": panels,
    }


def grafana_dashboard(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "lifeboat-dashboard.json"
    path.write_text(json.dumps(dashboard_model(), indent=2) + "\n")
    return path
