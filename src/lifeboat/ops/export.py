"""Units for teams with their own scheduler: systemd service+timer pairs and Kubernetes
CronJobs, one per scheduled asset."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml


def _on_calendar(schedule: str, window: Any = None) -> str:
    """A 5-field cron line as a systemd OnCalendar expression (minute hour dom month dow);
    an any-hour schedule is narrowed to the hours of the off-peak window."""
    fields = schedule.split()
    if len(fields) == 6:
        fields = fields[1:]
    minute, hour, dom, month, dow = fields
    if window is not None and hour == "*":
        from datetime import time

        hour = ",".join(f"{h:02d}" for h in range(24) if window.contains(time(h, 0)))

    def conv(value: str) -> str:
        return "*" if value == "*" else value.replace("*/", "0/")

    days = "" if dow == "*" else f"{dow.replace('0', 'Sun').replace('7', 'Sun')} "
    return f"{days}*-{conv(month)}-{conv(dom)} {conv(hour)}:{conv(minute)}:00"


def systemd_units(policy: Any, config: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, asset in policy.assets.items():
        if not asset.schedule:
            continue
        unit = f"lifeboat-backup-{name}"
        window = f"\n# off-peak window {asset.window}: the timer only fires inside it" if asset.window else ""
        service = (
            f"[Unit]\nDescription=lifeboat backup of {name}\nAfter=network-online.target\n\n"
            f"[Service]\nType=oneshot\n"
            f"ExecStart={sys.executable} -m lifeboat --config {config} backup {name}\n"
            "Nice=10\nIOSchedulingClass=idle\n"
        )
        calendar = _on_calendar(asset.schedule, asset.window)
        timer = (
            f"[Unit]\nDescription=lifeboat backup of {name} (schedule {asset.schedule}){window}\n\n"
            f"[Timer]\nOnCalendar={calendar}\nRandomizedDelaySec=60\nPersistent=true\n\n"
            "[Install]\nWantedBy=timers.target\n"
        )
        (out / f"{unit}.service").write_text(service)
        (out / f"{unit}.timer").write_text(timer)
        written += [out / f"{unit}.service", out / f"{unit}.timer"]
    for name, asset in policy.assets.items():
        if asset.kind == "postgres" and asset.stream:
            written.append(_stream_service(name, config, out))
    return written


def _stream_service(name: str, config: Path, out: Path) -> Path:
    """Continuous WAL streaming is a long-running service, not a timer."""
    path = out / f"lifeboat-wal-stream-{name}.service"
    path.write_text(
        f"[Unit]\nDescription=lifeboat WAL streaming for {name}\nAfter=network-online.target\n\n"
        f"[Service]\nType=simple\n"
        f"ExecStart={sys.executable} -m lifeboat --config {config} wal stream --asset {name}\n"
        "Restart=always\nRestartSec=5\nKillSignal=SIGTERM\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    return path


def kubernetes_cronjobs(policy: Any, out: Path, image: str = "lifeboat:latest") -> Path:
    docs = []
    for name, asset in policy.assets.items():
        if not asset.schedule:
            continue
        docs.append(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": f"lifeboat-backup-{name}", "labels": {"app": "lifeboat", "asset": name}},
                "spec": {
                    "schedule": " ".join(asset.schedule.split()[-5:]),
                    "concurrencyPolicy": "Forbid",
                    "successfulJobsHistoryLimit": 3,
                    "failedJobsHistoryLimit": 5,
                    "jobTemplate": {
                        "spec": {
                            "backoffLimit": 2,
                            "template": {
                                "spec": {
                                    "restartPolicy": "Never",
                                    "containers": [
                                        {
                                            "name": "lifeboat",
                                            "image": image,
                                            "args": [
                                                "--config",
                                                "/etc/lifeboat/lifeboat.toml",
                                                "backup",
                                                name,
                                            ],
                                            "volumeMounts": [
                                                {"name": "policy", "mountPath": "/etc/lifeboat"},
                                                {
                                                    "name": "keys",
                                                    "mountPath": "/etc/lifeboat/keys",
                                                    "readOnly": True,
                                                },
                                            ],
                                        }
                                    ],
                                    "volumes": [
                                        {"name": "policy", "configMap": {"name": "lifeboat-policy"}},
                                        {
                                            "name": "keys",
                                            "secret": {
                                                "secretName": "lifeboat-backup-key",
                                                "defaultMode": 0o400,
                                            },
                                        },
                                    ],
                                }
                            },
                        }
                    },
                },
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "lifeboat-cronjobs.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path
