"""Units for teams with their own scheduler: systemd service+timer pairs and Kubernetes
CronJobs, one per scheduled asset."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lifeboat.assets.objects.model import ObjectsAsset
from lifeboat.assets.registry import kind_of

if TYPE_CHECKING:
    from lifeboat.policy import Policy


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


ENV_FILE = Path("/etc/lifeboat/lifeboat.env")
# named calendar periods, shortest first: a cadence runs at the longest one not above it
PERIODS = [
    (timedelta(hours=1), "hourly"),
    (timedelta(days=1), "daily"),
    (timedelta(days=7), "weekly"),
    (timedelta(days=28), "monthly"),
]


def _period(every: timedelta) -> str:
    return next((name for length, name in reversed(PERIODS) if length <= every), "hourly")


def _service(description: str, command: str, ctx: dict[str, Any], extra: str = "") -> str:
    return (
        f"[Unit]\nDescription={description}\nWants=network-online.target\nAfter=network-online.target\n\n"
        f"[Service]\nType={'simple' if 'Restart=' in extra else 'oneshot'}\nUser={ctx['user']}\n"
        "# credentials (AWS_ACCESS_KEY_ID=, AWS_SECRET_ACCESS_KEY=, PGPASSWORD=...), mode 0600:\n"
        "# kept out of the unit, which any local user can read\n"
        f"EnvironmentFile=-{ctx['env_file']}\n"
        f"WorkingDirectory={ctx['config'].parent}\n"
        f"ExecStart={ctx['lifeboat']} {command}\n{extra}"
    )


def _timer(description: str, calendar: str, persistent: bool, note: str = "") -> str:
    # Persistent=true runs a missed timer at boot, at any hour: only for jobs without a window
    persist = "Persistent=true\n" if persistent else "Persistent=false\n"
    return (
        f"[Unit]\nDescription={description}{note}\n\n"
        f"[Timer]\nOnCalendar={calendar}\nRandomizedDelaySec=60\n{persist}\n"
        "[Install]\nWantedBy=timers.target\n"
    )


def _write_pair(out: Path, unit: str, service: str, timer: str) -> list[Path]:
    (out / f"{unit}.service").write_text(service)
    (out / f"{unit}.timer").write_text(timer)
    return [out / f"{unit}.service", out / f"{unit}.timer"]


def systemd_units(
    policy: Policy, config: Path, out: Path, *, user: str = "root", env_file: Path = ENV_FILE
) -> list[Path]:
    """Backup timers per scheduled asset (windows as OnCalendar hours), WAL-stream services,
    repository check and read-data timers, retention (with a recovery key) and drill timers;
    every unit runs as ``user`` with credentials from ``env_file``."""
    out.mkdir(parents=True, exist_ok=True)
    ctx = {
        "user": user,
        "env_file": env_file,
        "config": config,
        "lifeboat": f"{sys.executable} -m lifeboat --config {config}",
    }
    written = []
    for name, asset in policy.assets.items():
        if not asset.schedule:
            continue
        note = f"\n# off-peak window {asset.window}: the timer only fires inside it" if asset.window else ""
        service = _service(
            f"lifeboat backup of {name}", f"backup {name}", ctx, "Nice=10\nIOSchedulingClass=idle\n"
        )
        timer = _timer(
            f"lifeboat backup of {name} (schedule {asset.schedule})",
            _on_calendar(asset.schedule, asset.window),
            persistent=asset.window is None,
            note=note,
        )
        written += _write_pair(out, f"lifeboat-backup-{name}", service, timer)
    for name, asset in policy.assets.items():
        if kind_of(asset).systemd_streams(asset):
            written.append(_stream_service(name, config, out, ctx))
    written += _maintenance_units(policy, out, ctx)
    return written


def _maintenance_units(policy: Policy, out: Path, ctx: dict[str, Any]) -> list[Path]:
    daemon = policy.daemon
    written = _write_pair(
        out,
        "lifeboat-check",
        _service("lifeboat repository check", "check", ctx),
        _timer("lifeboat repository check", _period(daemon.check_every), persistent=True),
    )
    written += _write_pair(
        out,
        "lifeboat-check-read-data",
        _service("lifeboat: read every pack back", "check --read-data", ctx, "Nice=10\n"),
        _timer("lifeboat: read every pack back", _period(daemon.read_data_every), persistent=True),
    )
    if policy.repository.recovery_key:  # forget and WAL expiry read the snapshots
        written += _write_pair(
            out,
            "lifeboat-retention",
            _service("lifeboat retention", "forget", ctx, f"ExecStart={ctx['lifeboat']} prune\n"),
            _timer(
                "lifeboat retention: forget, then prune", _period(daemon.retention_every), persistent=True
            ),
        )
    for name, drill in policy.drills.items():
        written += _write_pair(
            out,
            f"lifeboat-drill-{name}",
            _service(f"lifeboat drill {name}", f"drill run {name}", ctx, "Nice=5\n"),
            _timer(
                f"lifeboat drill {name} (every {drill.every.days}d)", _period(drill.every), persistent=True
            ),
        )
    return written


def systemd_install_steps(written: list[Path], env_file: Path = ENV_FILE) -> list[str]:
    timers = [p.name for p in written if p.suffix == ".timer"]
    streams = [p.name for p in written if p.name.startswith("lifeboat-wal-stream-")]
    directory = written[0].parent if written else Path(".")
    return [
        f"install -m 0644 {directory}/lifeboat-* /etc/systemd/system/",
        f"install -d -m 0750 {env_file.parent} && install -m 0600 /dev/null {env_file}"
        "   # then add the credentials (AWS_..., PGPASSWORD)",
        "systemctl daemon-reload",
        "systemctl enable --now " + " ".join(timers + streams),
        "systemctl list-timers 'lifeboat-*'",
    ]


def _stream_service(name: str, config: Path, out: Path, ctx: dict[str, Any] | None = None) -> Path:
    """Continuous WAL streaming is a long-running service, not a timer."""
    ctx = ctx or {
        "user": "root",
        "env_file": ENV_FILE,
        "config": config,
        "lifeboat": f"{sys.executable} -m lifeboat --config {config}",
    }
    path = out / f"lifeboat-wal-stream-{name}.service"
    service = _service(
        f"lifeboat WAL streaming for {name}",
        f"wal stream --asset {name}",
        ctx,
        "Restart=always\nRestartSec=5\nKillSignal=SIGTERM\n",
    )
    path.write_text(service + "\n[Install]\nWantedBy=multi-user.target\n")
    return path


def kubernetes_cronjobs(policy: Policy, out: Path, image: str = "lifeboat:latest") -> Path:
    docs = []
    for name, asset in policy.assets.items():
        if not asset.schedule or getattr(asset, "shards", None):
            continue  # a sharded asset runs as Jobs (kubernetes_shard_jobs)
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


CRON_PERIODS = {"hourly": "0 * * * *", "daily": "0 4 * * *", "weekly": "0 4 * * 0", "monthly": "0 5 1 * *"}


def _maintenance_cronjob(name: str, schedule: str, args: list[str], image: str) -> dict[str, Any]:
    """A CronJob running one lifeboat command with the policy, the backup key and the
    credentials Secret (AWS_..., PGPASSWORD; optional, for a file repository)."""
    container = {
        "name": "lifeboat",
        "image": image,
        "args": ["--config", "/etc/lifeboat/lifeboat.toml", *args],
        "envFrom": [{"secretRef": {"name": "lifeboat-credentials", "optional": True}}],
        "volumeMounts": [
            {"name": "policy", "mountPath": "/etc/lifeboat"},
            {"name": "keys", "mountPath": "/etc/lifeboat/keys", "readOnly": True},
        ],
    }
    pod = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [
            {"name": "policy", "configMap": {"name": "lifeboat-policy"}},
            {"name": "keys", "secret": {"secretName": "lifeboat-backup-key", "defaultMode": 0o400}},
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "labels": {"app": "lifeboat", "job": name.removeprefix("lifeboat-")}},
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 5,
            "jobTemplate": {"spec": {"backoffLimit": 1, "template": {"spec": pod}}},
        },
    }


def kubernetes_maintenance(policy: Policy, out: Path, image: str = "lifeboat:latest") -> Path:
    """The jobs besides backups, as in the systemd export: repository check and read-data,
    retention (with a recovery key) and one CronJob per drill."""
    daemon = policy.daemon
    docs = [
        _maintenance_cronjob("lifeboat-check", CRON_PERIODS[_period(daemon.check_every)], ["check"], image),
        _maintenance_cronjob(
            "lifeboat-check-read-data",
            CRON_PERIODS[_period(daemon.read_data_every)],
            ["check", "--read-data"],
            image,
        ),
    ]
    if policy.repository.recovery_key:
        schedule = CRON_PERIODS[_period(daemon.retention_every)]
        docs.append(_maintenance_cronjob("lifeboat-forget", schedule, ["forget"], image))
        # prune an hour later: after forget, never concurrently with it
        minute, hour, *rest = schedule.split()
        later = [minute, str((int(hour) + 1) % 24)] if hour.isdigit() else ["30", hour]
        docs.append(_maintenance_cronjob("lifeboat-prune", " ".join(later + rest), ["prune"], image))
    for name, drill in policy.drills.items():
        schedule = CRON_PERIODS[_period(drill.every)]
        docs.append(_maintenance_cronjob(f"lifeboat-drill-{name}", schedule, ["drill", "run", name], image))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "lifeboat-maintenance.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


# --- sharded object backups as Kubernetes Jobs ----------------------------------------------
#
# A plan Job, an Indexed Job of N shard workers (each pod's shard is its
# JOB_COMPLETION_INDEX) and a commit Job, created in that order by a CronJob that runs
# kubectl; the run id (@RUN@ in the templates) ties the three together.

RUN_PLACEHOLDER = "@RUN@"
POLICY_PATH = "/etc/lifeboat/lifeboat.toml"
DEFAULT_BACKOFF_PER_INDEX = 3
DEFAULT_RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


def _lifeboat_pod(image: str, args: list[str], resources: dict[str, Any] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "lifeboat",
        "image": image,
        "args": ["--config", POLICY_PATH, *args],
        # the bucket's and the repository's S3 credentials, if they come from a Secret
        "envFrom": [{"secretRef": {"name": "lifeboat-credentials", "optional": True}}],
        "resources": resources or DEFAULT_RESOURCES,
        "volumeMounts": [
            {"name": "policy", "mountPath": "/etc/lifeboat"},
            {"name": "keys", "mountPath": "/etc/lifeboat/keys", "readOnly": True},
        ],
    }
    return {
        "restartPolicy": "Never",  # required by backoffLimitPerIndex; a failed pod is replaced
        "containers": [container],
        "volumes": [
            {"name": "policy", "configMap": {"name": "lifeboat-policy"}},
            {"name": "keys", "secret": {"secretName": "lifeboat-backup-key", "defaultMode": 0o400}},
        ],
    }


def _job(name: str, asset: str, step: str, pod: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"lifeboat-{step}-{name}-{RUN_PLACEHOLDER}",
            "labels": {
                "app": "lifeboat",
                "asset": asset,
                "lifeboat/step": step,
                "lifeboat/run": RUN_PLACEHOLDER,
            },
        },
        "spec": {**spec, "ttlSecondsAfterFinished": 7 * 86400, "template": {"spec": pod}},
    }


def shard_job_templates(asset: ObjectsAsset, image: str) -> dict[str, dict[str, Any]]:
    """plan, shards (the Indexed Job) and commit, with @RUN@ for the run id."""
    from lifeboat.assets.objects.shards import worker_args  # what the local flow runs

    name = _dns(asset.name)
    shards = int(asset.shards or 1)
    plan_args = ["backup", asset.name, "--plan-shards", str(shards), "--run", RUN_PLACEHOLDER, "--json"]
    return {
        "plan": _job(name, asset.name, "plan", _lifeboat_pod(image, plan_args), backoffLimit=2),
        "shards": _job(
            name,
            asset.name,
            "shards",
            _lifeboat_pod(image, worker_args(asset.name, RUN_PLACEHOLDER)),
            completionMode="Indexed",
            completions=shards,
            parallelism=min(shards, int(asset.shard_parallelism or shards)),
            backoffLimitPerIndex=DEFAULT_BACKOFF_PER_INDEX,
            # one shard failing for good fails the run at once: the commit would refuse anyway
            maxFailedIndexes=0,
        ),
        "commit": _job(
            name,
            asset.name,
            "commit",
            _lifeboat_pod(image, ["backup", asset.name, "--run", RUN_PLACEHOLDER, "--commit", "--json"]),
            backoffLimit=2,
        ),
    }


def restore_job_template(
    asset: ObjectsAsset, image: str, target: str = "s3://RESTORE-BUCKET/prefix"
) -> dict[str, Any]:
    """The Indexed Job for a parallel restore of one snapshot (@SNAPSHOT@) into ``target``;
    pods read with the recovery key from the Secret lifeboat-recovery-key."""
    from lifeboat.assets.objects.shards import restore_worker_args

    shards = int(asset.shards or 1)
    args = restore_worker_args(asset.name, target, shards, "@SNAPSHOT@", None)
    pod = _lifeboat_pod(image, [*args, "--shard", "$(JOB_COMPLETION_INDEX)"])
    pod["volumes"].append(
        {"name": "recovery", "secret": {"secretName": "lifeboat-recovery-key", "defaultMode": 0o400}}
    )
    pod["containers"][0]["volumeMounts"].append(
        {"name": "recovery", "mountPath": "/etc/lifeboat/recovery", "readOnly": True}
    )
    pod["containers"][0]["args"] += ["--recovery-key", "/etc/lifeboat/recovery/recovery.key"]
    job = _job(
        _dns(asset.name),
        asset.name,
        "restore",
        pod,
        completionMode="Indexed",
        completions=shards,
        parallelism=min(shards, int(asset.shard_parallelism or shards)),
        backoffLimitPerIndex=DEFAULT_BACKOFF_PER_INDEX,
    )
    job["metadata"]["name"] = f"lifeboat-restore-{_dns(asset.name)}"
    del job["metadata"]["labels"]["lifeboat/run"]
    return job


def _dns(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[
        :24
    ]  # "lifeboat-shards-NAME-RUN" within 63


ORCHESTRATE = """set -eu
RUN="$(date -u +%Y%m%d-%H%M%S)-k8s"
step() {{  # create one step's Job from its template, then wait until it completes or fails
  sed "s/@RUN@/$RUN/g" "/templates/$1.yaml" | kubectl create -f -
  job="lifeboat-$1-{name}-$RUN"
  kubectl wait --for=create "job/$job" --timeout=60s
  while :; do
    state="$(kubectl get "job/$job" -o 'jsonpath={{.status.conditions[?(@.status=="True")].type}}')"
    case "$state" in
      *Complete*) return 0 ;;
      *Failed*) echo "lifeboat: $job failed; run $RUN is not committed" >&2; exit 1 ;;
    esac
    kubectl wait --for=condition=complete "job/$job" --timeout=60s >/dev/null 2>&1 || true
  done
}}
step plan
step shards
step commit
echo "lifeboat: run $RUN of {asset} committed"
"""


def kubernetes_shard_jobs(policy: Policy, out: Path, image: str = "lifeboat:latest") -> list[Path]:
    """For each objects asset with ``shards = N``: the three Job templates, a restore
    Indexed Job, and an orchestrating CronJob (with its ServiceAccount and Role) when the
    asset has a schedule."""
    written = []
    for asset in policy.assets.values():
        if not kind_of(asset).shards(asset) or not isinstance(asset, ObjectsAsset):
            continue  # only a bucket is sharded (this module writes the objects kind's jobs)
        name = _dns(asset.name)
        folder = out / f"lifeboat-shards-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        templates = shard_job_templates(asset, image)
        for step, job in templates.items():
            path = folder / f"{step}-job.yaml"
            path.write_text(yaml.safe_dump(job, sort_keys=False))
            written.append(path)
        path = folder / "restore-job.yaml"
        path.write_text(yaml.safe_dump(restore_job_template(asset, image), sort_keys=False))
        written.append(path)
        if asset.schedule:
            path = folder / "cronjob.yaml"
            orchestrator = _orchestrator(asset, asset.schedule, name, templates)
            path.write_text(yaml.safe_dump_all(orchestrator, sort_keys=False))
            written.append(path)
    return written


def _orchestrator(
    asset: ObjectsAsset, schedule: str, name: str, templates: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    account = f"lifeboat-shards-{name}"
    meta = {"name": account, "labels": {"app": "lifeboat", "asset": asset.name}}
    script = ORCHESTRATE.format(name=name, asset=asset.name)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {f"{step}.yaml": yaml.safe_dump(job, sort_keys=False) for step, job in templates.items()},
        },
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": meta,
            "spec": {
                "schedule": " ".join(schedule.split()[-5:]),
                "concurrencyPolicy": "Forbid",
                "jobTemplate": {
                    "spec": {
                        "backoffLimit": 0,  # a rerun would start a new run id; shards are rerun per index
                        "template": {
                            "spec": {
                                "serviceAccountName": account,
                                "restartPolicy": "Never",
                                "containers": [
                                    {
                                        "name": "orchestrate",
                                        "image": "bitnami/kubectl:1.33",
                                        "command": ["/bin/sh", "-c", script],
                                        "volumeMounts": [{"name": "templates", "mountPath": "/templates"}],
                                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                                    }
                                ],
                                "volumes": [{"name": "templates", "configMap": {"name": account}}],
                            }
                        },
                    }
                },
            },
        },
    ]
