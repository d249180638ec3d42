"""The daemon: scheduled backups inside off-peak windows, WAL spool draining, checks,
retention and drills at their cadence, with retries, alerts, metrics and a run history.

One instance per state directory (flock). SIGTERM stops scheduling; running jobs finish,
so the repository is never left mid-write by the daemon itself (and a killed backup is
safe anyway: nothing is visible before its snapshot commits).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lifeboat import runtime
from lifeboat.errors import LifeboatError
from lifeboat.ops.alerts import Alerter
from lifeboat.ops.deadline import DeadlineExceeded
from lifeboat.ops.metrics import Metrics, serve
from lifeboat.ops.replication import copy_job
from lifeboat.ops.runs import Run, RunHistory, now_iso
from lifeboat.ops.scheduler import DEFAULT_TIMEOUT, job_deadline, next_due, overran
from lifeboat.policy import format_duration
from lifeboat.private import private_opener, write_private
from lifeboat.redact import redact

Log = Callable[[str], None]
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass
class Job:
    name: str  # e.g. backup:maindb, check, retention, drill:monthly, wal-drain:maindb
    asset: str | None
    run: Callable[[], int]  # returns bytes added (0 when not meaningful)
    schedule: str | None = None  # cron; None: every `every`
    every: timedelta | None = None
    window: Any = None
    next_at: datetime = EPOCH


@dataclass
class DaemonState:
    stop: threading.Event = field(default_factory=threading.Event)
    running: dict[str, Future[None]] = field(default_factory=dict)


class SingleInstance:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None

    def __enter__(self) -> SingleInstance:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+", opener=private_opener)
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            pid = self._fh.read().strip() or "?"
            raise LifeboatError(
                f"another lifeboat daemon is running for this policy (pid {pid})",
                hint="stop it first, or use a different [state] dir",
            ) from None
        self._fh.truncate(0)
        self._fh.write(str(os.getpid()))
        self._fh.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


def build_jobs(policy: Any) -> list[Job]:
    jobs: list[Job] = []
    for name, asset in policy.assets.items():
        if asset.schedule:
            run = _backup_with_deadline(
                policy, name, asset.window, stop_at_window_end=asset.stop_at_window_end, timeout=asset.timeout
            )
            jobs.append(Job(f"backup:{name}", name, run, schedule=asset.schedule, window=asset.window))
        if asset.kind == "postgres" and asset.wal_async:
            jobs.append(Job(f"wal-drain:{name}", name, _wal_drain(policy, name), every=timedelta(seconds=10)))
        if asset.kind == "postgres":
            jobs.append(
                Job(f"wal-verify:{name}", name, _wal_verify(policy, name), every=policy.daemon.check_every)
            )

    def check() -> int:
        repo = runtime.open_for_write(policy)
        report = repo.check()
        if not report.ok:
            raise LifeboatError(
                f"check found {len(report.problems)} problem(s): {report.problems[0].message}"
            )
        return 0

    jobs.append(Job("check", None, check, every=policy.daemon.check_every))
    parts = policy.daemon.read_data_parts
    jobs.append(
        Job("check-read-data", None, _read_data_part(policy), every=policy.daemon.read_data_every / parts)
    )
    if policy.repository.recovery_key:
        jobs.append(Job("retention", None, _retention(policy), every=policy.daemon.retention_every))
    for name, drill in policy.drills.items():
        jobs.append(Job(f"drill:{name}", None, _drill(policy, name), every=drill.every))
    for name, copy in policy.copies.items():
        jobs.append(Job(f"copy:{name}", None, copy_job(policy, name), schedule=copy.schedule))
    return jobs


class StoppedAtWindowEnd(LifeboatError):
    """A heavy backup stopped because its off-peak window closed."""


STOP_GRACE = 60.0  # seconds a stopped backup gets to unwind before it is killed


def _backup_until_window_end(policy: Any, name: str, window: Any) -> Callable[[], int]:
    return _backup_with_deadline(policy, name, window, stop_at_window_end=True)


def _backup_with_deadline(
    policy: Any,
    name: str,
    window: Any = None,
    *,
    stop_at_window_end: bool = False,
    timeout: timedelta | None = None,
) -> Callable[[], int]:
    """The backup in a child process, stopped with SIGTERM at its deadline (the close of
    its window with stop_at_window_end, its timeout, or a day): the child unwinds (no
    snapshot, locks released) and the next run reuses what it uploaded. A child process
    because a thread stuck in a transfer cannot be stopped, and a process can."""

    def run() -> int:
        deadline, why = job_deadline(datetime.now(), window, stop_at_window_end, timeout)
        cmd = [sys.executable, "-m", "lifeboat", "--config", str(policy.path), "backup", name, "--json"]
        env = {**os.environ, "LIFEBOAT_ACTOR": "daemon"}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        out, err, stopped = _wait_until(proc, deadline)
        # past the deadline: stopped here, or by the child's own timeout, which it armed later
        if proc.returncode != 0 and (stopped or datetime.now() >= deadline):
            if why == "window":
                raise StoppedAtWindowEnd(
                    f"backup of {name} stopped at the end of its window {window}; "
                    "the next run reuses what was uploaded"
                )
            limit = format_duration(timeout or DEFAULT_TIMEOUT)
            raise DeadlineExceeded(
                f"backup of {name} ran past its timeout of {limit} and was stopped; "
                "nothing was committed, the next run reuses what was uploaded"
            )
        if proc.returncode != 0:
            first = err.strip().splitlines()[0] if err.strip() else f"backup exited {proc.returncode}"
            raise LifeboatError(first.removeprefix("lifeboat: error: "))
        stored: int = json.loads(out)[0]["stats"]["stored_bytes"]
        return stored

    return run


def _wait_until(proc: subprocess.Popen[str], deadline: datetime) -> tuple[str, str, bool]:
    """The child's output once it exits; at the deadline it gets SIGTERM, then SIGKILL
    after STOP_GRACE. Reads as it waits, so a chatty child never blocks on a full pipe."""
    while True:
        remaining = (deadline - datetime.now()).total_seconds()
        if remaining <= 0:
            break
        try:
            out, err = proc.communicate(timeout=min(remaining, 5.0))
            return out, err, False
        except subprocess.TimeoutExpired:
            continue
    proc.terminate()
    try:
        out, err = proc.communicate(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out, err, True


def _wal_drain(policy: Any, name: str) -> Callable[[], int]:
    def run() -> int:
        from lifeboat.assets.postgres.wal import drain_spool

        pushed: int = drain_spool(runtime.open_for_write(policy), name, policy.state_dir / "wal-spool" / name)
        return pushed

    return run


def _wal_verify(policy: Any, name: str) -> Callable[[], int]:
    def run() -> int:
        from lifeboat.assets.postgres.wal import namespace, verify_continuity

        repo = runtime.open_for_write(policy)
        report = verify_continuity(repo.list_ref_names(namespace(name)), repo.snapshots(name), name)
        if not report.ok:
            missing = report.missing_start or report.gaps[0].missing
            raise LifeboatError(f"WAL gap in {name}: segment {missing} is missing from the archive")
        return 0

    return run


def _read_data_part(policy: Any) -> Callable[[], int]:
    """Reads the next part of the packs, so every pack is read once per read_data_every.
    With the recovery key configured every chunk is decrypted and verified; without it
    (a backup host) each pack is checked against its content hash."""
    state = Path(policy.state_dir) / "read-data.json"

    def run() -> int:
        parts = policy.daemon.read_data_parts
        part = json.loads(state.read_text()).get("next_part", 1) if state.exists() else 1
        part = part if 1 <= part <= parts else 1
        if policy.repository.recovery_key:
            repo = runtime.open_for_read(policy, runtime.Credentials(), purpose="check --read-data")
        else:
            repo = runtime.open_for_write(policy)
        report = repo.check(read_data=True, subset=f"{part}/{parts}", hash_only=not repo.keyring.can_read)
        write_private(state, json.dumps({"next_part": part % parts + 1, "last_part": part}).encode())
        if not report.ok:
            raise LifeboatError(
                f"check --read-data-subset {part}/{parts} found {len(report.problems)} problem(s): "
                f"{report.problems[0].message}"
            )
        read: int = report.bytes_read
        return read

    return run


def _retention(policy: Any) -> Callable[[], int]:
    def run() -> int:
        repo = runtime.open_for_read(policy, runtime.Credentials(), purpose="retention")
        repo.forget(runtime.keep_rules(policy))
        runtime.expire_wal(policy, repo)
        removed: int = repo.prune().bytes_removed
        return -removed

    return run


def _drill(policy: Any, name: str) -> Callable[[], int]:
    def run() -> int:
        from lifeboat.drills.service import run_drill

        result, bundle = run_drill(policy, name, runtime.Credentials())
        if result.verdict != "pass":
            raise LifeboatError(f"drill {name} failed: {'; '.join(result.reasons)[:300]} (evidence {bundle})")
        return 0

    return run


class Daemon:
    def __init__(
        self,
        policy: Any,
        *,
        log: Log = lambda _: None,
        jobs: list[Job] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.log: Log = lambda line: log(redact(line))  # children's stderr too: no secrets
        self.jobs = jobs if jobs is not None else build_jobs(policy)
        self.rng = rng or random.Random()
        self.state = DaemonState()
        self.history = RunHistory(policy.state_dir / "runs.jsonl")
        self.alerts = Alerter(policy.alerts.webhooks, policy.state_dir / "alerts.json", self.log)
        self.metrics = Metrics()
        self.dashboard_path = policy.state_dir / "dashboard" / "index.html"
        self._dashboard_built = -1e9

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
        from lifeboat.ops.status import asset_status

        try:
            repo = runtime.open_for_write(self.policy)
            for st in asset_status(self.policy, repo):
                self.metrics.rpo.labels(st.asset).set(st.rpo_s)
                self.metrics.rto.labels(st.asset).set(st.rto_s)
                if st.exposure_s is not None:
                    self.metrics.exposure.labels(st.asset).set(st.exposure_s)
                    if st.last_backup:
                        self.metrics.last_success.labels(st.asset).set(
                            datetime.fromisoformat(st.last_backup).timestamp()
                        )
                if st.last_drill_rto_s is not None:
                    self.metrics.drill_rto.labels(st.asset).set(st.last_drill_rto_s)
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
                self.refresh_divergence(st)
                breach = st.exposure_s is not None and st.exposure_s > st.rpo_s
                if breach:
                    self.alerts.fire(
                        f"rpo:{st.asset}",
                        f"{st.asset}: exposure {st.exposure_s:.0f}s exceeds RPO {st.rpo_s:.0f}s",
                    )
                else:
                    self.alerts.resolve(f"rpo:{st.asset}")
                self.report_bad_pages(st)
                self.report_archive_failure(st)
            self.refresh_key_age(repo)
            self.refresh_wal_lag()
            self.metrics.repo_size.set(sum(s.stats.stored_bytes for s in repo.snapshots()))
            last = {
                r.asset: r for r in self.history.all() if r.job.startswith("backup:") and r.outcome == "ok"
            }
            for asset, run in last.items():
                self.metrics.bytes_added.labels(asset or "").set(run.bytes)
            from lifeboat.drills.service import ledger_for

            self.metrics.actions.set(len([a for a in ledger_for(self.policy).load() if a.status == "open"]))
            if time.monotonic() - self._dashboard_built > 30:
                from lifeboat.ops.dashboard import build_dashboard

                build_dashboard(self.policy, self.dashboard_path.parent)
                self._dashboard_built = time.monotonic()
        except LifeboatError as exc:
            self.log(f"status refresh failed: {exc.message}")

    def refresh_divergence(self, st: Any) -> None:
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

    def supervise_stream(self, name: str) -> None:
        """pg_receivewal for one asset for the daemon's lifetime; a failure alerts and is
        retried with backoff (the streamer itself restarts pg_receivewal when it exits)."""
        from lifeboat.assets.postgres.stream import WalStreamer

        spec = self.policy.asset(name)
        backoff = 1.0
        while not self.state.stop.is_set():
            streamer = WalStreamer(
                name,
                spec.dsn,
                Path(self.policy.state_dir) / "wal-stream" / name,
                lambda: runtime.open_for_write(self.policy),
                pg_bin=spec.pg_bin,
                log=self.log,
            )
            try:
                streamer.run(self.state.stop)
                self.alerts.resolve(f"stream:{name}")
            except Exception as exc:
                message = exc.message if isinstance(exc, LifeboatError) else f"{type(exc).__name__}: {exc}"
                self.log(f"wal stream {name}: {message}")
                self.alerts.fire(f"stream:{name}", f"WAL streaming for {name} failed: {message}")
                self.state.stop.wait(backoff)
                backoff = min(backoff * 2, 300)

    def report_bad_pages(self, st: Any) -> None:
        """Alert while the asset's latest snapshot holds pages that failed their checksum."""
        key = f"bad-pages:{st.asset}"
        if st.bad_pages:
            detail = next((b for b in st.breaches if b.startswith("degraded:")), "degraded")
            self.alerts.fire(key, f"{st.asset}: {detail}")
        else:
            self.alerts.resolve(key)

    def report_archive_failure(self, st: Any) -> None:
        """Alert while the server's archive_command has failed since its last success."""
        key = f"archiving:{st.asset}"
        if st.archive_failure:
            self.alerts.fire(key, f"{st.asset}: {st.archive_failure}")
        else:
            self.alerts.resolve(key)

    def refresh_key_age(self, repo: Any) -> None:
        from lifeboat.ops.status import key_warnings

        warnings = key_warnings(self.policy, repo)
        self.metrics.record_key_age(self.policy, repo, datetime.now(UTC))
        if warnings:
            self.alerts.fire("key-age", warnings[0])
        else:
            self.alerts.resolve("key-age")

    def refresh_wal_lag(self) -> None:
        from lifeboat.ops.status import wal_archive_backlog

        for name, asset in self.policy.assets.items():
            if asset.kind != "postgres":
                continue
            backlog = wal_archive_backlog(asset.pgdata, Path(self.policy.state_dir) / "wal-spool" / name)
            self.metrics.wal_lag.labels(name).set(backlog.lag_s)
            self.metrics.wal_pending.labels(name).set(backlog.segments)

    def serve_forever(
        self,
        *,
        max_seconds: float | None = None,
        once_due: bool = False,
        listen: str | None = None,
        tick: float = 0.5,
    ) -> None:
        with SingleInstance(self.policy.state_dir / "daemon.lock"):
            server = serve(self.metrics, listen, lambda: self.dashboard_path) if listen else None
            previous = signal.signal(signal.SIGTERM, lambda *_: self.state.stop.set())
            started = time.monotonic()
            self.schedule(datetime.now(UTC))
            pool = ThreadPoolExecutor(max_workers=self.policy.daemon.concurrency, thread_name_prefix="job")
            streams = [
                threading.Thread(target=self.supervise_stream, args=(name,), name=f"stream-{name}")
                for name, asset in self.policy.assets.items()
                if asset.kind == "postgres" and asset.stream
            ]
            for thread in streams:
                thread.start()
            try:
                self.refresh_status()
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
                    self.refresh_status()
                    if max_seconds is not None and time.monotonic() - started >= max_seconds:
                        break
                    self.state.stop.wait(tick)
            finally:
                self.state.stop.set()  # also ends the WAL streams, which ship what they hold
                pool.shutdown(wait=True)  # running jobs finish; nothing new starts
                for thread in streams:
                    thread.join(30)
                self.refresh_status()
                signal.signal(signal.SIGTERM, previous)
                if server is not None:
                    server.shutdown()
