"""Prometheus metrics and the dashboard, served by the daemon."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, generate_latest

if TYPE_CHECKING:
    from lifeboat.ops.status import AssetStatus
    from lifeboat.policy import Policy
    from lifeboat.repo import Repository


def set_or_clear(gauge: Gauge, asset: str, value: float | None) -> None:
    """The asset's sample, or none when status has no value now: a rule must not judge a
    value status no longer stands by (a drill refused since, a drill without an RTO)."""
    if value is not None:
        gauge.labels(asset).set(value)
        return
    try:
        gauge.remove(asset)
    except KeyError:  # never set
        pass


def _timestamp(iso: str | None) -> float | None:
    if not iso:
        return None
    moment = datetime.fromisoformat(iso)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["asset"]
        self.last_success = Gauge(
            "lifeboat_last_success_timestamp_seconds",
            "Last successful backup",
            labels,
            registry=self.registry,
        )
        self.exposure = Gauge("lifeboat_exposure_seconds", "Data at risk now", labels, registry=self.registry)
        self.rpo = Gauge("lifeboat_rpo_target_seconds", "RPO target", labels, registry=self.registry)
        self.rto = Gauge("lifeboat_rto_target_seconds", "RTO target", labels, registry=self.registry)
        self.duration = Gauge(
            "lifeboat_job_duration_seconds", "Last job duration", ["job", "asset"], registry=self.registry
        )
        self.success_ratio = Gauge(
            "lifeboat_backup_success_ratio", "Backup success over 30 days", labels, registry=self.registry
        )
        self.bytes_added = Gauge(
            "lifeboat_bytes_added", "Bytes stored by the last backup", labels, registry=self.registry
        )
        self.repo_size = Gauge(
            "lifeboat_repository_bytes", "Bytes stored by all snapshots", registry=self.registry
        )
        self.drill_rto = Gauge(
            "lifeboat_last_drill_rto_seconds",
            "RTO achieved by the last drill",
            labels,
            registry=self.registry,
        )
        self.actions = Gauge(
            "lifeboat_open_corrective_actions", "Open corrective actions", registry=self.registry
        )
        self.wal_lag = Gauge(
            "lifeboat_wal_archive_lag_seconds",
            "Age of the oldest WAL segment not yet in the repository",
            labels,
            registry=self.registry,
        )
        self.wal_pending = Gauge(
            "lifeboat_wal_pending_segments",
            "WAL segments waiting to be archived (pg_wal .ready files and the async spool)",
            labels,
            registry=self.registry,
        )
        self.job_runs = Gauge(
            "lifeboat_job_runs", "Job runs by outcome", ["job", "outcome"], registry=self.registry
        )

        # the targets next to the measurements, so alert rules and dashboards compare the two
        # without copying the policy into PromQL
        self.success_target = Gauge(
            "lifeboat_backup_success_target_ratio",
            "Backup success target of the asset's class",
            labels,
            registry=self.registry,
        )
        self.last_drill = Gauge(
            "lifeboat_last_drill_timestamp_seconds",
            "Start of the last drill that covered the asset",
            labels,
            registry=self.registry,
        )
        self.drill_every = Gauge(
            "lifeboat_drill_interval_seconds",
            "Drill cadence of the asset's class",
            labels,
            registry=self.registry,
        )
        self.key_age = Gauge(
            "lifeboat_backup_key_age_seconds", "Age of the repository's backup key", registry=self.registry
        )
        self.key_max_age = Gauge(
            "lifeboat_backup_key_max_age_seconds",
            "Maximum backup key age (the strictest class)",
            registry=self.registry,
        )
        self.drill_due = Gauge(
            "lifeboat_drill_due_timestamp_seconds",
            "When the asset's next drill is due: its class's cadence after its last drill, or after "
            "its first backup when it was never drilled",
            labels,
            registry=self.registry,
        )
        self.breaches = Gauge(
            "lifeboat_status_breaches",
            "Breaches `lifeboat status` reports for the asset (a failed or refused drill, an "
            "unrestorable base backup, a WAL gap, exposure over RPO...); the repository's and the "
            "copies' own are not counted (a failing check or copy job is lifeboat_job_failing)",
            labels,
            registry=self.registry,
        )
        self.refreshed = Gauge(
            "lifeboat_status_refreshed_timestamp_seconds",
            "Last status refresh that worked (0: none yet): the per-asset gauges are as of then",
            registry=self.registry,
        )
        self.refresh_failing = Gauge(
            "lifeboat_status_refresh_failing",
            "1 while the status refresh fails (the exposures grow from the last known newest points)",
            registry=self.registry,
        )
        self.started = Gauge(
            "lifeboat_daemon_started_timestamp_seconds",
            "When this daemon started (a status never refreshed is stale from then; restarts change it)",
            registry=self.registry,
        )
        self.job_failing = Gauge(
            "lifeboat_job_failing",
            "1 while the job's last run failed after all its retries, 0 after a success",
            ["task"],  # not `job`: Prometheus would rename it to exported_job (its own target label)
            registry=self.registry,
        )

    def record_targets(self, policy: Policy, st: AssetStatus) -> None:
        """The class targets of one asset, and when it was last drilled."""
        cls = policy.data_class(st.asset)
        self.success_target.labels(st.asset).set(cls.success_target)
        self.drill_every.labels(st.asset).set(cls.drill_every.total_seconds())
        set_or_clear(self.last_drill, st.asset, _timestamp(st.last_drill))
        set_or_clear(self.drill_due, st.asset, _timestamp(st.drill_due))
        set_or_clear(self.drill_rto, st.asset, st.last_drill_rto_s)

    def record_key_age(self, policy: Policy, repo: Repository, now: datetime) -> None:
        from lifeboat.errors import LifeboatError
        from lifeboat.repo.records import key_created

        if policy.classes:
            self.key_max_age.set(min(c.key_max_age for c in policy.classes.values()).total_seconds())
        try:
            created = key_created(repo, repo.key_id)
        except (LifeboatError, KeyError, ValueError):
            return
        self.key_age.set((now - created).total_seconds())

    def started_now(self) -> None:
        """Mark the daemon's start (real time, as Prometheus's ``time()``)."""
        self.started.set(time.time())

    def render(self) -> bytes:
        return generate_latest(self.registry)


def serve(metrics: Metrics, listen: str, dashboard: Callable[[], Path | None]) -> ThreadingHTTPServer:
    host, _, port = listen.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, ctype = metrics.render(), "text/plain; version=0.0.4"
            elif self.path in ("/", "/index.html"):
                page = dashboard()
                body = page.read_bytes() if page and page.exists() else b"<p>no dashboard yet</p>"
                ctype = "text/html; charset=utf-8"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server
