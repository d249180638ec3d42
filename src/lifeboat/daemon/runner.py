"""The daemon's scheduler: runs each job when it is due (windows, retries, deadlines), keeps
the kinds' streams running, and refreshes metrics and alerts on a thread of its own (a
refresh waits on servers, and the jobs must not wait with it).

One instance per state directory (flock). SIGTERM stops scheduling; running jobs finish,
so the repository is never left mid-write by the daemon itself (and a killed backup is
safe anyway: nothing is visible before its snapshot commits). The jobs are built in
`jobs.py`, the status published by `monitor.py`.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lifeboat import runtime
from lifeboat.assets.registry import kind_of
from lifeboat.daemon.instance import SingleInstance
from lifeboat.daemon.jobs import Job, StoppedAtWindowEnd, _backup_until_window_end, build_jobs
from lifeboat.daemon.monitor import StatusMonitor
from lifeboat.errors import LifeboatError
from lifeboat.ops.alerts import Alerter
from lifeboat.ops.deadline import DeadlineExceeded
from lifeboat.ops.metrics import Metrics, serve
from lifeboat.ops.runs import Run, RunHistory, now_iso
from lifeboat.ops.scheduler import next_due, overran
from lifeboat.policy import Policy
from lifeboat.redact import redact

# `Job`, `build_jobs` and `_backup_until_window_end` are where the daemon's callers and
# tests have always imported them from
__all__ = ["Daemon", "DaemonState", "Job", "_backup_until_window_end", "build_jobs"]

Log = Callable[[str], None]


@dataclass
class DaemonState:
    """What the daemon's threads share: the stop event and the jobs running now."""

    stop: threading.Event = field(default_factory=threading.Event)
    running: dict[str, Future[None]] = field(default_factory=dict)


class Daemon:
    """Runs the jobs when they are due (retries, windows, deadlines), serves metrics, alerts."""

    def __init__(
        self,
        policy: Policy,
        *,
        log: Log = lambda _: None,
        jobs: list[Job] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.log: Log = lambda line: log(redact(line))  # children's stderr too: no secrets
        self.jobs = jobs if jobs is not None else build_jobs(policy, self.log)
        self.rng = rng or random.Random()
        self.state = DaemonState()
        self.history = RunHistory(policy.state_dir / "runs.jsonl")
        self.alerts = Alerter(policy.alerts.webhooks, policy.state_dir / "alerts.json", self.log)
        self.metrics = Metrics()
        self.dashboard_path = policy.state_dir / "dashboard" / "index.html"
        self.monitor = StatusMonitor(
            policy,
            metrics=self.metrics,
            alerts=self.alerts,
            history=self.history,
            log=self.log,
            dashboard_path=self.dashboard_path,
        )

    def schedule(self, now: datetime) -> None:
        """Next run of each job from its last recorded run: a run missed while the daemon
        was down happens at once (like systemd's Persistent=true)."""
        jitter = self.policy.daemon.jitter
        jitter = jitter if jitter.total_seconds() < 3600 else timedelta(0)
        for job in self.jobs:
            last = self.history.last(job.name, job.asset)
            base = datetime.fromisoformat(last.started) if last else now
            if job.schedule and last is None:  # never ran: as soon as its window allows
                job.next_at = job.window.next_start(now.astimezone()) if job.window else now
            elif job.schedule:
                job.next_at = next_due(job.schedule, base, job.window, jitter, self.rng)
            else:
                assert job.every is not None
                job.next_at = base + job.every if last else now

    def run_job(self, job: Job) -> None:
        """Run one job now with its retries; record the run, update metrics and alerts."""
        started = datetime.now()
        try:
            self._run_with_retries(job)
        finally:
            self.report_overrun(job, started, datetime.now())

    def report_overrun(self, job: Job, started: datetime, ended: datetime) -> None:
        """A job that started in its off-peak window and ended after it closed is reported
        (alert until a later run fits in the window)."""
        key = f"window-overrun:{job.name}"
        if overran(job.window, started, ended):
            self.log(f"{job.name}: ran past the end of its window {job.window}")
            self.alerts.fire(
                key, f"{job.name} ran past its off-peak window {job.window} (until {ended:%H:%M:%S})"
            )
        elif job.window is not None:
            self.alerts.resolve(key)

    def _run_with_retries(self, job: Job) -> None:
        retries = self.policy.daemon.retries
        for attempt in range(1, retries + 2):
            started, t0 = now_iso(), time.monotonic()
            try:
                added = job.run()
                self.history.record(
                    Run(
                        job.name,
                        job.asset,
                        started,
                        now_iso(),
                        "ok",
                        round(time.monotonic() - t0, 3),
                        added,
                        attempt,
                    )
                )
                self.alerts.resolve(f"job-failed:{job.name}")
                self.alerts.resolve(f"deadline:{job.name}")
                self.log(f"{job.name}: ok")
                self.metrics.job_runs.labels(job.name, "ok").inc()
                self.metrics.job_failing.labels(job.name).set(0)
                self.metrics.duration.labels(job.name, job.asset or "").set(time.monotonic() - t0)
                return
            except Exception as exc:
                message = exc.message if isinstance(exc, LifeboatError) else f"{type(exc).__name__}: {exc}"
                outcome = "stopped" if isinstance(exc, StoppedAtWindowEnd) else "failed"
                self.history.record(
                    Run(
                        job.name,
                        job.asset,
                        started,
                        now_iso(),
                        outcome,
                        round(time.monotonic() - t0, 3),
                        0,
                        attempt,
                        message,
                    )
                )
                self.metrics.job_runs.labels(job.name, outcome).inc()
                self.log(f"{job.name}: attempt {attempt} {outcome}: {message}")
                if outcome == "stopped":
                    self.alerts.fire(f"window-overrun:{job.name}", message)
                    return  # not a failure to retry: it waits for the next window
                if isinstance(exc, DeadlineExceeded):
                    self.alerts.fire(f"deadline:{job.name}", message)
                    return  # a retry would run just as long: the next scheduled run tries again
                if attempt <= retries and not self.state.stop.is_set():
                    time.sleep(min(2 ** (attempt - 1), 60))
                    continue
                self.alerts.fire(f"job-failed:{job.name}", f"{job.name} failed {attempt} times: {message}")
                self.metrics.job_failing.labels(job.name).set(1)

    def refresh_status(self) -> None:
        """Recompute each asset's exposure and status for the metrics and alerts."""
        self.monitor.refresh()

    def _monitor_until_stopped(self, jobs_done: threading.Event, tick: float) -> None:
        """Status refreshes, one per tick, on a thread of their own: a refresh waits on the
        repository and on servers (a silent PostgreSQL server holds its probe for up to
        monitor.REFRESH_PROBE_WAIT_S), and the scheduler must not wait with it. Once the
        daemon stops, one last refresh after the running jobs have finished."""
        while not self.state.stop.is_set():
            self._refresh_logging_failures()
            self.state.stop.wait(tick)
        jobs_done.wait()
        # waits for probes as every refresh does: with no wait no server could answer, and
        # an archiver that failed or recovered meanwhile would go unreported until the next start
        self._refresh_logging_failures()

    def _refresh_logging_failures(self) -> None:
        # the monitor's own errors (LifeboatError) are logged by it; anything else would end
        # this thread, and every metric and alert after it, with nothing but a traceback
        try:
            self.refresh_status()
        except Exception as exc:
            self.log(f"status refresh failed: {type(exc).__name__}: {exc}")

    def supervise_stream(self, name: str) -> None:
        """pg_receivewal for one asset for the daemon's lifetime; a failure alerts and is
        retried with backoff (the streamer itself restarts pg_receivewal when it exits)."""
        kind = kind_of(self.policy.asset(name))
        backoff = 1.0
        while not self.state.stop.is_set():
            streamer = kind.streamer(self.policy, name, lambda: runtime.open_for_write(self.policy), self.log)
            try:
                streamer.run(self.state.stop)
                self.alerts.resolve(f"stream:{name}")
            except Exception as exc:
                message = exc.message if isinstance(exc, LifeboatError) else f"{type(exc).__name__}: {exc}"
                self.log(f"wal stream {name}: {message}")
                self.alerts.fire(f"stream:{name}", f"WAL streaming for {name} failed: {message}")
                self.state.stop.wait(backoff)
                backoff = min(backoff * 2, 300)

    def serve_forever(
        self,
        *,
        max_seconds: float | None = None,
        once_due: bool = False,
        listen: str | None = None,
        tick: float = 0.5,
    ) -> None:
        """Run the scheduler loop until stopped (or for ``max_seconds``, for tests)."""
        with SingleInstance(self.policy.state_dir / "daemon.lock"):
            server = serve(self.metrics, listen, lambda: self.dashboard_path) if listen else None
            previous = signal.signal(signal.SIGTERM, lambda *_: self.state.stop.set())
            started = time.monotonic()
            self.schedule(datetime.now(UTC))
            pool = ThreadPoolExecutor(max_workers=self.policy.daemon.concurrency, thread_name_prefix="job")
            streams = [
                threading.Thread(target=self.supervise_stream, args=(name,), name=f"stream-{name}")
                for name, asset in self.policy.assets.items()
                if kind_of(asset).streams(asset)
            ]
            for thread in streams:
                thread.start()
            jobs_done = threading.Event()
            monitor = threading.Thread(
                target=self._monitor_until_stopped, args=(jobs_done, tick), name="status-monitor", daemon=True
            )
            monitor.start()
            try:
                while not self.state.stop.is_set():
                    now = datetime.now(UTC)
                    for job in self.jobs:
                        busy = job.name in self.state.running and not self.state.running[job.name].done()
                        if job.next_at <= now and not busy:
                            self.state.running[job.name] = pool.submit(self.run_job, job)
                            if job.schedule:
                                job.next_at = next_due(job.schedule, now, job.window)
                            else:
                                assert job.every is not None
                                job.next_at = now + job.every
                    if once_due:
                        break
                    if max_seconds is not None and time.monotonic() - started >= max_seconds:
                        break
                    self.state.stop.wait(tick)
            finally:
                self.state.stop.set()  # also ends the WAL streams, which ship what they hold
                pool.shutdown(wait=True)  # running jobs finish; nothing new starts
                for thread in streams:
                    thread.join(30)
                jobs_done.set()
                monitor.join()  # its last refresh, of what the jobs left
                signal.signal(signal.SIGTERM, previous)
                if server is not None:
                    server.shutdown()
