"""What the daemon publishes between jobs: each asset's exposure, targets and success
rate as metrics, and the alerts that follow from them (RPO breach, bad pages, a failing
archiver, a divergent WAL branch, an old key), plus the dashboard page."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from lifeboat import clock, runtime
from lifeboat.assets.registry import kind_of
from lifeboat.errors import LifeboatError
from lifeboat.ops.alerts import Alerter
from lifeboat.ops.metrics import Metrics
from lifeboat.ops.runs import RunHistory
from lifeboat.policy import Policy
from lifeboat.repo import Repository

if TYPE_CHECKING:
    from lifeboat.ops.status import AssetStatus

# How long a refresh waits for the kinds' probes (a PostgreSQL server's archiver view): one
# connect timeout (assets/postgres/connection.py). A server that took the connection and went
# silent has its probe left out (asked again at a later refresh, once it has given up), and
# the other assets' metrics do not wait on it for the minute `status` allows.
REFRESH_PROBE_WAIT_S = 10.0

# How long refreshes may fail (the repository out of reach, a state file refused) before the
# daemon alerts: one failed refresh among hundreds a day is a blip, a stale status for five
# minutes is not. The gauges say it at once (lifeboat_status_refresh_failing).
STALE_ALERT_AFTER_S = 300.0


class StatusMonitor:
    """Recomputes the status of every asset for the metrics and raises or clears alerts."""

    def __init__(
        self,
        policy: Policy,
        *,
        metrics: Metrics,
        alerts: Alerter,
        history: RunHistory,
        log: Callable[[str], None],
        dashboard_path: Path,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.metrics = metrics
        self.alerts = alerts
        self.history = history
        self.log = log
        self.dashboard_path = dashboard_path
        self.monotonic = monotonic
        self._dashboard_built = -1e9
        self._failing_since: float | None = None
        self._newest: dict[str, float] = {}  # each asset's newest restorable point (epoch s)
        self._breaches: dict[str, int] = {}  # as the last refresh that worked counted them
        # a first refresh that hangs is stale ten minutes after the start (LifeboatStatusStale)
        self.metrics.started_now()

    def refresh(self) -> None:
        """Recompute each asset's exposure and status for the metrics and alerts (the
        kinds' probes waited on for ``REFRESH_PROBE_WAIT_S``). A refresh that fails leaves
        no gauge claiming more than is known: the exposures keep growing from the last
        newest points, the failure is published at once and alerted once it has lasted
        ``STALE_ALERT_AFTER_S``."""
        try:
            statuses = self._refresh_statuses()
        except Exception as exc:
            self._refresh_failed(exc)
            if not isinstance(exc, LifeboatError):
                raise  # the runner logs what is not lifeboat's own error, with its type
            self.log(f"status refresh failed: {exc.message}")
            return
        self._refresh_worked()
        self._rebuild_dashboard(statuses)

    def _rebuild_dashboard(self, statuses: list[AssetStatus]) -> None:
        """The dashboard page, every 30 s at most; a page that cannot be written is logged,
        not taken for a failed refresh (the metrics are fresh all the same)."""
        if time.monotonic() - self._dashboard_built <= 30:
            return
        from lifeboat.ops.dashboard import build_dashboard

        try:
            build_dashboard(self.policy, self.dashboard_path.parent, statuses=statuses)
        except Exception as exc:  # the page is a view: never the refresh's failure
            self.log(
                f"dashboard not written: {getattr(exc, 'message', None) or f'{type(exc).__name__}: {exc}'}"
            )
        finally:
            self._dashboard_built = time.monotonic()

    def _refresh_worked(self) -> None:
        self._failing_since = None
        self.metrics.refresh_failing.set(0)
        self.metrics.refreshed.set(time.time())  # Prometheus's time() is the real clock
        self.alerts.resolve("status-refresh")

    def _refresh_failed(self, exc: Exception) -> None:
        """Publish the failure; the exposures go on from what the last good refresh knew
        (never reset: a repository out of reach is no newer backup)."""
        self.metrics.refresh_failing.set(1)
        now = clock.now().timestamp()
        for asset, newest in self._newest.items():
            exposure = max(0.0, now - newest)
            self.metrics.exposure.labels(asset).set(exposure)
            rpo = self.policy.data_class(asset).rpo.total_seconds()
            if exposure > rpo:  # as the refresh would say: nothing newer is known
                self.metrics.breaches.labels(asset).set(max(1, self._breaches.get(asset, 0)))
                self.alerts.fire(
                    f"rpo:{asset}",
                    f"{asset}: exposure {exposure:.0f}s exceeds RPO {rpo:.0f}s (from the newest "
                    "backup known before the status refresh began failing)",
                )
        if self._failing_since is None:
            self._failing_since = self.monotonic()
        started = self._failing_since
        if self.monotonic() - started >= STALE_ALERT_AFTER_S:
            why = exc.message if isinstance(exc, LifeboatError) else f"{type(exc).__name__}: {exc}"
            self.alerts.fire(
                "status-refresh",
                f"status refresh failing for {self.monotonic() - started:.0f}s, exposure and drill "
                f"metrics are stale: {why}",
            )

    def _refresh_statuses(self) -> list[AssetStatus]:
        from lifeboat.ops.status import asset_status
        from lifeboat.ops.status_view import StatusView

        repo: Repository | None = None
        try:
            repo = runtime.open_for_write(self.policy)
            with runtime.drill_copy_records(self.policy) as copies:
                view = StatusView.of(self.policy)
                statuses = asset_status(view, repo, probe_wait=REFRESH_PROBE_WAIT_S, copies=copies)
            for st in statuses:
                self.metrics.rpo.labels(st.asset).set(st.rpo_s)
                self.metrics.rto.labels(st.asset).set(st.rto_s)
                # no restorable backup (never made, or every snapshot refused): exposed without
                # bound, so the gauge and a rule on it say so rather than keep a stale value
                exposure = st.exposure_s if st.exposure_s is not None else math.inf
                self.metrics.exposure.labels(st.asset).set(exposure)
                if st.exposure_s is not None and st.last_backup:
                    newest = datetime.fromisoformat(st.last_backup).timestamp()
                    self.metrics.last_success.labels(st.asset).set(newest)
                    self._newest[st.asset] = newest
                else:
                    self._newest.pop(st.asset, None)  # +Inf already
                rate = self.history.success_rate(f"backup:{st.asset}", st.asset, datetime.now(UTC))
                if rate is not None:
                    self.metrics.success_ratio.labels(st.asset).set(rate)
                    target = self.policy.data_class(st.asset).success_target
                    if rate < target:
                        self.alerts.fire(
                            f"success:{st.asset}",
                            f"{st.asset}: backup success rate {rate:.0%} is below the target {target:.0%}",
                        )
                    else:
                        self.alerts.resolve(f"success:{st.asset}")
                self.metrics.record_targets(self.policy, st)
                self.metrics.breaches.labels(st.asset).set(len(st.breaches))
                self._breaches[st.asset] = len(st.breaches)
                self.refresh_divergence(st)
                if st.exposure_s is None:
                    self.alerts.fire(
                        f"rpo:{st.asset}",
                        f"{st.asset}: no restorable backup (never backed up, or every snapshot refused)",
                    )
                elif st.exposure_s > st.rpo_s:
                    self.alerts.fire(
                        f"rpo:{st.asset}",
                        f"{st.asset}: exposure {st.exposure_s:.0f}s exceeds RPO {st.rpo_s:.0f}s",
                    )
                else:
                    self.alerts.resolve(f"rpo:{st.asset}")
                self.report_bad_pages(st)
                self.report_archive_failure(st)
            self.refresh_key_age(repo)
            self.refresh_audit_anchoring()
            self.refresh_wal_lag()
            self.metrics.repo_size.set(sum(s.stats.stored_bytes for s in repo.snapshots()))
            last = {
                r.asset: r for r in self.history.all() if r.job.startswith("backup:") and r.outcome == "ok"
            }
            for asset, run in last.items():
                self.metrics.bytes_added.labels(asset or "").set(run.bytes)
            from lifeboat.drills.service import ledger_for

            self.metrics.actions.set(len([a for a in ledger_for(self.policy).load() if a.status == "open"]))
            return statuses
        finally:
            if repo is not None:  # every tick opens one: close it, or sockets pile up
                repo.close()

    def refresh_divergence(self, st: AssetStatus) -> None:
        """A second cluster archiving into a postgres asset (a restored copy, split brain)."""
        key = f"wal-divergence:{st.asset}"
        if st.divergent:
            d = st.divergent[0]
            self.alerts.fire(
                key,
                f"{st.asset}: WAL archive has a divergent branch: timeline {d['timeline']} forked from "
                f"{d['parent']} at {d['fork_lsn'] or '?'} and both kept archiving "
                f"(newest WAL on timeline {d['newest_wal_on']}); run 'lifeboat wal verify'",
            )
        else:
            self.alerts.resolve(key)

    def report_bad_pages(self, st: AssetStatus) -> None:
        """Alert while the asset's latest snapshot holds pages that failed their checksum."""
        key = f"bad-pages:{st.asset}"
        if st.bad_pages:
            detail = next((b for b in st.breaches if b.startswith("degraded:")), "degraded")
            self.alerts.fire(key, f"{st.asset}: {detail}")
        else:
            self.alerts.resolve(key)

    def report_archive_failure(self, st: AssetStatus) -> None:
        """Alert while the server's archive_command has failed since its last success; a
        server that gives no answer (out of reach, silent) leaves the alert as it is."""
        key = f"archiving:{st.asset}"
        if st.archive_failure:
            self.alerts.fire(key, f"{st.asset}: {st.archive_failure}")
        elif st.archiver_answered:
            self.alerts.resolve(key)

    def refresh_key_age(self, repo: Repository) -> None:
        """Alert on a backup key older than its data class allows."""
        from lifeboat.ops.status import key_warnings
        from lifeboat.ops.status_view import StatusView

        warnings = key_warnings(StatusView.of(self.policy), repo)
        self.metrics.record_key_age(self.policy, repo, datetime.now(UTC))
        if warnings:
            self.alerts.fire("key-age", warnings[0])
        else:
            self.alerts.resolve("key-age")

    def refresh_audit_anchoring(self) -> None:
        """Alert while audit entries wait for their signed copy in the repository."""
        from lifeboat.audit import anchoring_problem

        problem = anchoring_problem(Path(self.policy.state_dir) / "audit.jsonl")
        if problem:
            self.alerts.fire("audit-anchoring", problem)
        else:
            self.alerts.resolve("audit-anchoring")

    def refresh_wal_lag(self) -> None:
        """Publish how far each WAL archiver is behind (ready segments and the spool)."""
        from lifeboat.ops.status import wal_archive_backlog

        for name, asset in self.policy.assets.items():
            kind = kind_of(asset)
            if not kind.archives_wal:
                continue
            backlog = wal_archive_backlog(
                kind.archive_backlog_dir(asset), Path(self.policy.state_dir) / "wal-spool" / name
            )
            self.metrics.wal_lag.labels(name).set(backlog.lag_s)
            self.metrics.wal_pending.labels(name).set(backlog.segments)
