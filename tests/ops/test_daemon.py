"""The daemon against a real repository, real files and a real webhook receiver."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import yaml
from prometheus_client.parser import text_string_to_metric_families

from lifeboat.assets.postgres.cluster import free_port
from lifeboat.ops.scheduler import next_due
from lifeboat.policy import Window
from tests.harness import LifeboatCli, PolicyBuilder
from tests.harness.silent import SilentHost
from tests.harness.wait import wait_until as wait_for


def window_around(now: datetime, hours_from: int, hours_to: int) -> str:
    start, end = now + timedelta(hours=hours_from), now + timedelta(hours=hours_to)
    return f"{start:%H}:00-{end:%H}:00"


def write_policy(
    root: Path, webhook: str, rpo: str = "1d", retries: int = 1, key_max_age: str = "365d"
) -> Path:
    local = datetime.now()
    (root / "in").mkdir(exist_ok=True)
    (root / "in" / "f").write_bytes(os.urandom(1000))
    (root / "out").mkdir(exist_ok=True)
    return (
        PolicyBuilder()
        .repository(f"file://{root}/repo", keyfile="backup.key")
        .data_class("standard", rpo=rpo, rto="1h", key_max_age=key_max_age)
        .files("inwin", [root / "in"], schedule="*/3 * * * * *", window=window_around(local, -1, 2))
        .files("outwin", [root / "out"], schedule="*/3 * * * * *", window=window_around(local, 3, 4))
        .files("flaky", [root / "flaky"], schedule="*/2 * * * * *")
        .webhook(webhook)
        .daemon(jitter="0s", retries=retries, read_data_every="6s", read_data_parts=2)
        .write(root / "lifeboat.toml")
    )


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        Receiver.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()


def lifeboat(policy: Path, *args: str) -> subprocess.Popen[str]:
    return LifeboatCli(policy).popen(*args, text=True)


def runs_by_job(state: Path) -> dict[str, list[str]]:
    path = state / "runs.jsonl"
    by_job: dict[str, list[str]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        run = json.loads(line)
        by_job.setdefault(run["job"], []).append(run["outcome"])
    return by_job


def metrics_answer(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
        return True
    except OSError:
        return False


def test_next_due_waits_for_the_window():
    window = Window.parse("01:00-05:00")
    after = datetime(2026, 11, 24, 12, 0, 0)
    assert next_due("0 * * * *", after, window) == datetime(2026, 11, 25, 1, 0, 0)
    assert next_due("0 2 * * *", after, window) == datetime(2026, 11, 25, 2, 0, 0)
    assert next_due("*/5 * * * * *", datetime(2026, 11, 24, 3, 0, 0), window) == datetime(
        2026, 11, 24, 3, 0, 5
    )


def test_daemon_windows_retries_alerts_metrics_and_single_instance(tmp_path):
    Receiver.received = []
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    policy = write_policy(tmp_path, f"http://127.0.0.1:{hook.server_address[1]}/hook", key_max_age="1s")
    LifeboatCli(policy).run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    port = free_port()
    daemon = lifeboat(policy, "daemon", "--max-seconds", "300", "--listen", f"127.0.0.1:{port}")
    state = tmp_path / ".lifeboat"
    try:
        wait_for(lambda: metrics_answer(port), "the daemon's metrics endpoint")
        second = lifeboat(policy, "daemon", "--max-seconds", "2", "--no-http")
        assert second.wait(30) == 2 and "another lifeboat daemon is running" in second.stderr.read()
        wait_for(
            lambda: (
                runs_by_job(state).get("backup:inwin", []).count("ok") >= 2
                and runs_by_job(state).get("check-read-data", []).count("ok") >= 2
                # both attempts (retries = 1) failed: fixing the cause sooner would race the retry
                and runs_by_job(state).get("backup:flaky", []).count("failed") >= 2
            ),
            "two backups, two read-data parts and a flaky job that failed its retry too",
        )
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        families = {f.name: f for f in text_string_to_metric_families(metrics)}
        rpo = {s.labels["asset"]: s.value for s in families["lifeboat_rpo_target_seconds"].samples}
        assert rpo == {"inwin": 86400.0, "outwin": 86400.0, "flaky": 86400.0}
        assert any(
            s.labels["asset"] == "inwin" for s in families["lifeboat_last_success_timestamp_seconds"].samples
        )
        assert "lifeboat" in urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
        # never backed up (outside its window): exposed without bound, and alerted, not left out
        exposure = {s.labels["asset"]: s.value for s in families["lifeboat_exposure_seconds"].samples}
        assert exposure["outwin"] == math.inf and exposure["inwin"] < 86400
        wait_for(
            lambda: any(
                m["condition"] == "rpo:outwin" and "no restorable backup" in m["message"]
                for m in Receiver.received
            ),
            "the never-backed-up asset's RPO alert",
        )
        # the failing job has used up its retries and alerted; only then is its cause fixed
        wait_for(
            lambda: any(m["condition"] == "job-failed:backup:flaky" for m in Receiver.received),
            "the flaky job's alert",
        )
        (tmp_path / "flaky").mkdir()
        wait_for(lambda: runs_by_job(state)["backup:flaky"][-1] == "ok", "the flaky job to recover")
        wait_for(
            lambda: (
                [m["status"] for m in Receiver.received if m["condition"] == "job-failed:backup:flaky"]
                == ["firing", "resolved"]
            ),
            f"the flaky job's alert to resolve (received: {Receiver.received})",
        )
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, daemon.stderr.read()
    finally:
        if daemon.poll() is None:
            daemon.kill()
        hook.shutdown()
    by_job = runs_by_job(state)
    assert by_job["backup:inwin"].count("ok") >= 2
    assert "backup:outwin" not in by_job  # due all the time, but never inside its window
    assert "failed" in by_job["backup:flaky"] and by_job["backup:flaky"][-1] == "ok"
    flaky = [m for m in Receiver.received if m["condition"] == "job-failed:backup:flaky"]
    assert [m["status"] for m in flaky] == ["firing", "resolved"]
    # the read-data scan rotates through the packs: part 1/2, then 2/2, ...
    assert by_job["check-read-data"].count("ok") >= 2
    assert json.loads((tmp_path / ".lifeboat" / "read-data.json").read_text())["next_part"] in (1, 2)
    key_age = [m for m in Receiver.received if m["condition"] == "key-age"]
    assert [m["status"] for m in key_age] == ["firing"] and "keys rotate" in key_age[0]["message"]


def test_sigterm_during_backup_leaves_a_consistent_repository(tmp_path):
    policy = write_policy(tmp_path, "http://127.0.0.1:9/none")
    for i in range(6):
        (tmp_path / "in" / f"big{i}").write_bytes(os.urandom(64 << 20))
    LifeboatCli(policy).run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    daemon = lifeboat(policy, "daemon", "--max-seconds", "300", "--no-http")
    data = tmp_path / "repo" / "data"
    # SIGTERM once the first backup has stored something, so it always lands mid-backup
    wait_for(lambda: data.exists() and any(p.is_file() for p in data.rglob("*")), "the first pack")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    check = LifeboatCli(policy).run(
        "check", "--read-data", "--recovery-key", str(tmp_path / "recovery.key"), check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # SIGTERM stops scheduling but lets the running backup finish and record itself
    assert runs_by_job(tmp_path / ".lifeboat")["backup:inwin"] == ["ok"]

    def carried_on() -> bool:  # the next run is due a few seconds after the last recorded one
        again = lifeboat(policy, "daemon", "--once-due", "--no-http")
        assert again.wait(120) == 0
        return runs_by_job(tmp_path / ".lifeboat")["backup:inwin"].count("ok") >= 2

    wait_for(carried_on, "the restarted daemon to carry on with the backup")


def test_status_exits_1_when_exposure_exceeds_rpo(tmp_path, clock):
    policy = write_policy(tmp_path, "http://127.0.0.1:9/none", rpo="1h")
    lb = LifeboatCli(policy, clock=clock)
    lb.run("init", "--recovery-key-out", str(tmp_path / "r.key"))
    lb.run("backup", "inwin")
    fresh = lb.json("status", check=False)  # exits 1: the other assets were never backed up
    inwin = next(a for a in fresh["assets"] if a["asset"] == "inwin")
    assert not inwin["breaches"]
    # Status two hours on, through the same clock every age is judged by (no waiting).
    clock.advance(hours=2)
    stale = lb.run("status", "--json", check=False)
    assert stale.returncode == 1
    inwin = next(a for a in json.loads(stale.stdout)["assets"] if a["asset"] == "inwin")
    assert any("exceeds RPO" in b for b in inwin["breaches"])
    assert 7000 < inwin["exposure_s"] < 7200 + 600


def test_schedule_export_systemd_and_kubernetes(tmp_path):
    policy = write_policy(tmp_path, "http://127.0.0.1:9/none")
    with policy.open("a") as fh:
        fh.write('\n[assets.db]\nkind = "postgres"\nclass = "standard"\ndsn = "host=/tmp"\nstream = true\n')
    out = LifeboatCli(policy).run(
        "schedule",
        "export",
        "--systemd",
        str(tmp_path / "units"),
        "--kubernetes",
        str(tmp_path / "k8s"),
        check=False,
    )
    assert out.returncode == 0, out.stderr
    timer = (tmp_path / "units" / "lifeboat-backup-inwin.timer").read_text()
    assert "OnCalendar=" in timer and "[Install]" in timer
    assert "ExecStart=" in (tmp_path / "units" / "lifeboat-backup-inwin.service").read_text()
    stream = (tmp_path / "units" / "lifeboat-wal-stream-db.service").read_text()
    assert "wal stream --asset db" in stream and "Restart=always" in stream
    docs = list(yaml.safe_load_all((tmp_path / "k8s" / "lifeboat-cronjobs.yaml").read_text()))
    assert {d["metadata"]["name"] for d in docs} == {
        "lifeboat-backup-inwin",
        "lifeboat-backup-outwin",
        "lifeboat-backup-flaky",
    }
    assert all(d["spec"]["concurrencyPolicy"] == "Forbid" for d in docs)
    assert docs[0]["spec"]["schedule"] == "* * * * *"  # CronJobs have no seconds field
    import shutil

    if shutil.which("systemd-analyze"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", *map(str, (tmp_path / "units").iterdir())],
            capture_output=True,
            text=True,
        )
        assert "Failed to parse" not in verify.stderr, verify.stderr
    _ = UTC


def test_a_job_that_runs_past_its_window_is_reported_once(tmp_path):
    from lifeboat.assets.registry import load_policy
    from lifeboat.daemon.runner import Daemon, Job

    Receiver.received = []
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        policy = load_policy(write_policy(tmp_path, f"http://127.0.0.1:{hook.server_address[1]}/h"))
        job = Job(
            "backup:heavy", "heavy", lambda: 0, schedule="0 2 * * *", window=Window.parse("01:00-05:00")
        )
        daemon = Daemon(policy, jobs=[job])
        day = datetime(2026, 11, 25)
        daemon.report_overrun(job, day.replace(hour=4, minute=50), day.replace(hour=5, minute=20))
        daemon.report_overrun(job, day.replace(hour=4, minute=55), day.replace(hour=5, minute=1))
        daemon.report_overrun(job, day.replace(hour=2), day.replace(hour=2, minute=30))
    finally:
        hook.shutdown()
    overruns = [m for m in Receiver.received if m["condition"] == "window-overrun:backup:heavy"]
    assert [m["status"] for m in overruns] == ["firing", "resolved"]
    assert "01:00" in overruns[0]["message"] or "window" in overruns[0]["message"]


def test_wal_archive_backlog_counts_ready_segments_and_the_spool(tmp_path):
    from lifeboat.ops.status import wal_archive_backlog

    pgdata, spool = tmp_path / "pgdata", tmp_path / "spool"
    status = pgdata / "pg_wal" / "archive_status"
    status.mkdir(parents=True)
    spool.mkdir()
    assert wal_archive_backlog(pgdata, spool) == wal_archive_backlog(None, spool)
    assert wal_archive_backlog(pgdata, spool).lag_s == 0
    now = time.time()
    (status / "000000010000000000000003.done").touch()
    ready = status / "000000010000000000000004.ready"
    ready.touch()
    os.utime(ready, (now - 40, now - 40))
    spooled = spool / "000000010000000000000005"
    spooled.write_bytes(b"x")
    os.utime(spooled, (now - 5, now - 5))
    (spool / ".drain.lock").touch()
    backlog = wal_archive_backlog(pgdata, spool, now=now)
    assert backlog.segments == 2 and 39 <= backlog.lag_s <= 41


def test_a_heavy_backup_is_stopped_cleanly_when_its_window_closes(tmp_path, monkeypatch):
    from lifeboat.assets.registry import load_policy
    from lifeboat.daemon import backup_child
    from lifeboat.daemon.runner import Daemon, Job, _backup_until_window_end

    policy_path = write_policy(tmp_path, "http://127.0.0.1:9/none")
    # 2 GiB of distinct, incompressible 1 MiB blocks: far more than the backup stores in
    # the second between two looks at the clock
    block = bytearray(os.urandom(64 << 20))
    for i in range(32):
        for j in range(64):
            block[j << 20 : (j << 20) + 8] = i.to_bytes(4, "big") + j.to_bytes(4, "big")
        (tmp_path / "in" / f"big{i}").write_bytes(block)
    lb = LifeboatCli(policy_path)
    lb.run("init", "--recovery-key-out", str(tmp_path / "r.key"))
    policy = load_policy(policy_path)
    repo = tmp_path / "repo"

    def child_is_storing() -> bool:
        return any((repo / "locks").glob("*")) and any((repo / "data").rglob("*/*"))

    class WindowClock(datetime):
        """The daemon's clock: the window closes once the child holds its lock and has
        stored a first pack, however long a loaded machine takes to get there."""

        closed = False

        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            cls.closed = cls.closed or child_is_storing()
            return datetime.now(tz) + (timedelta(days=1) if cls.closed else timedelta(0))

    monkeypatch.setattr(backup_child, "datetime", WindowClock)
    now = datetime.now()
    window = Window(
        start=(now - timedelta(hours=1)).time().replace(microsecond=0),
        end=(now + timedelta(hours=1)).time().replace(microsecond=0),
    )
    job = Job("backup:inwin", "inwin", _backup_until_window_end(policy, "inwin", window), window=window)
    Daemon(policy, jobs=[job]).run_job(job)
    assert WindowClock.closed
    runs = [json.loads(line) for line in (tmp_path / ".lifeboat" / "runs.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in runs] == ["stopped"] and "end of its window" in runs[0]["error"]
    assert lb.json("snapshots") == []  # nothing half-committed
    assert not list((repo / "locks").glob("*"))  # the child's lock was released
    lb.run("check", "--read-data", "--recovery-key", str(tmp_path / "r.key"))
    lb.run("backup", "inwin")  # the next run completes


def test_the_daemons_retention_and_check_jobs_leave_audit_entries(tmp_path):
    from lifeboat.assets.registry import load_policy
    from lifeboat.daemon.runner import Daemon, build_jobs

    policy_path = write_policy(tmp_path, "http://127.0.0.1:9/none")
    text = policy_path.read_text().replace(
        'keyfile = "backup.key"', 'keyfile = "backup.key"\nrecovery_key = "recovery.key"'
    )
    policy_path.write_text(
        text + "\n[classes.standard.retention]\nlast = 1\ndaily = 0\nweekly = 0\nmonthly = 0\n"
    )
    lb = LifeboatCli(policy_path)
    lb.run("init")
    for i in range(2):  # two snapshots of different data: retention keeps only the last
        (tmp_path / "in" / "f").write_bytes(os.urandom(300_000) + bytes([i]))
        lb.run("backup", "inwin")
    snaps = lb.json("snapshots")
    older, newer = sorted(snaps, key=lambda s: s["time"])
    policy = load_policy(policy_path)
    jobs = {j.name: j for j in build_jobs(policy) if j.name in ("retention", "check")}
    daemon = Daemon(policy, jobs=list(jobs.values()))

    daemon.run_job(jobs["retention"])
    daemon.run_job(jobs["check"])

    assert runs_by_job(tmp_path / ".lifeboat")["retention"] == ["ok"]
    left = lb.json("snapshots")
    assert [s["id"] for s in left] == [newer["id"]]
    audit = [json.loads(line) for line in (tmp_path / ".lifeboat" / "audit.jsonl").read_text().splitlines()]
    forget = next(e for e in audit if e["operation"] == "forget")
    assert forget["outcome"] == "ok" and forget["details"]["removed"] == [older["id"]]
    prune = next(e for e in audit if e["operation"] == "prune")
    assert prune["outcome"] == "ok" and prune["details"]["bytes_removed"] > 0
    check = [e for e in audit if e["operation"] == "check"]
    assert [(e["outcome"], e["details"]["problems"]) for e in check] == [("ok", 0)]

    (tmp_path / "recovery.key").rename(tmp_path / "elsewhere.key")  # a run that cannot even open
    daemon.run_job(jobs["retention"])

    assert runs_by_job(tmp_path / ".lifeboat")["retention"][-1] == "failed"
    audit = [json.loads(line) for line in (tmp_path / ".lifeboat" / "audit.jsonl").read_text().splitlines()]
    failed = [e for e in audit if e["operation"] == "retention"]
    assert failed and all(e["outcome"] == "failed" and "recovery" in e["details"]["error"] for e in failed)
    lb.run("audit", "verify")


def test_the_daemon_publishes_the_wal_archiver_backlog_of_a_postgres_asset(tmp_path):
    """Segments PostgreSQL marked ready but not yet archived (and the async spool) are the
    archive lag: the daemon reads them from the data directory the kind names."""
    from lifeboat.assets.registry import load_policy
    from lifeboat.daemon.runner import Daemon

    pgdata = tmp_path / "pgdata"
    (pgdata / "pg_wal" / "archive_status").mkdir(parents=True)
    for segment in ("000000010000000000000001", "000000010000000000000002"):
        (pgdata / "pg_wal" / "archive_status" / f"{segment}.ready").touch()
    (pgdata / "pg_wal" / "archive_status" / "000000010000000000000000.done").touch()  # archived
    policy = load_policy(
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .state(tmp_path / "state")
        .data_class("standard", rpo="1d", rto="1h")
        .postgres("db", dsn="host=/nonexistent dbname=postgres", pgdata=pgdata)
        .files("etc", [tmp_path])
        .write(tmp_path / "lifeboat.toml")
    )
    spool = tmp_path / "state" / "wal-spool" / "db"
    spool.mkdir(parents=True)
    (spool / "000000010000000000000003").touch()

    daemon = Daemon(policy, jobs=[])
    daemon.monitor.refresh_wal_lag()

    sample = daemon.metrics.registry.get_sample_value
    assert sample("lifeboat_wal_pending_segments", {"asset": "db"}) == 3
    assert sample("lifeboat_wal_pending_segments", {"asset": "etc"}) is None  # files: no archiver


def test_the_jobs_run_on_time_while_a_monitored_server_is_silent(tmp_path, monkeypatch):
    """A PostgreSQL server that took the status probe's connection and went silent (an
    outage) holds the daemon's status refresh, never its scheduler: the jobs run meanwhile,
    and once the server drops the connection the daemon stops at once."""
    from lifeboat.assets.registry import load_policy
    from lifeboat.daemon import monitor
    from lifeboat.daemon.runner import Daemon, Job

    silent = SilentHost(expect=1)
    path = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}", keyfile="backup.key")
        .state(tmp_path / "state")
        .data_class("standard", rpo="1d", rto="1h")
        .postgres("hung", dsn=silent.dsn("app"))
        .daemon(jitter="0s")
        .write(tmp_path / "lifeboat.toml")
    )
    LifeboatCli(path).run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "600")  # the probe never gives up on its own
    monkeypatch.setattr(monitor, "REFRESH_PROBE_WAIT_S", 3600.0)  # nor the refresh on it
    ran_while_silent: list[bool] = []

    def job() -> int:
        if silent.came.is_set() and not silent.closed.is_set():
            ran_while_silent.append(True)
        return 0

    daemon = Daemon(load_policy(path), jobs=[Job("tick", None, job, every=timedelta(milliseconds=10))])
    seen: dict[str, bool] = {}

    def watch() -> None:
        try:
            seen["probe held"] = silent.came.wait(90)
            seen["jobs ran"] = bool(wait_for(lambda: len(ran_while_silent) >= 3, "three jobs while silent"))
        finally:
            silent.close()  # the refresh waiting on it goes on, and the daemon can stop
            daemon.state.stop.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    daemon.serve_forever(max_seconds=300, tick=0.05)
    watcher.join()
    assert seen == {"probe held": True, "jobs ran": True}
    assert runs_by_job(tmp_path / "state")["tick"].count("ok") >= 3


def test_a_failing_status_refresh_is_published_and_alerted_not_hidden(tmp_path, monkeypatch, clock):
    """The repository goes out of reach: the daemon's gauges say at once that its status
    refresh fails, the exposure goes on growing from the last backup it knew (a stale low
    value would hide an RPO breach from the Prometheus rule), and once the failure has
    lasted STALE_ALERT_AFTER_S the daemon alerts. Back in reach, the alert clears. A never
    drilled asset has a drill due date from its first backup, for the overdue rule."""
    from lifeboat.assets.registry import load_policy
    from lifeboat.daemon import monitor
    from lifeboat.daemon.runner import Daemon

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("a")
    path = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}", keyfile="backup.key")
        .state(tmp_path / "state")
        .data_class("standard", rpo="1d", rto="1h", drill_every="7d")
        .files("docs", [tmp_path / "docs"])
        .write(tmp_path / "lifeboat.toml")
    )
    lb = LifeboatCli(path, clock=clock)
    with clock.shifted(-7200):  # set up and backed up two hours ago
        lb.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
        lb.run("backup", "docs")
    backed_up = time.time() - 7200

    monkeypatch.setenv("LIFEBOAT_CLOCK_OFFSET", "0")
    daemon = Daemon(load_policy(path), jobs=[])
    ticks = [1000.0]
    daemon.monitor.monotonic = lambda: ticks[0]
    sample = daemon.metrics.registry.get_sample_value
    daemon.monitor.refresh()
    assert sample("lifeboat_status_refresh_failing") == 0
    assert sample("lifeboat_status_refreshed_timestamp_seconds") >= time.time() - 600
    assert sample("lifeboat_daemon_started_timestamp_seconds") >= time.time() - 600
    assert 7200 <= sample("lifeboat_exposure_seconds", {"asset": "docs"}) < 7200 + 600
    due = sample("lifeboat_drill_due_timestamp_seconds", {"asset": "docs"})
    assert abs(due - (backed_up + 7 * 86400)) < 600
    assert sample("lifeboat_status_breaches", {"asset": "docs"}) == 0
    assert "rpo:docs" not in daemon.alerts.active

    (tmp_path / "repo").rename(tmp_path / "away")
    monkeypatch.setenv("LIFEBOAT_CLOCK_OFFSET", str(86400))  # a day on: past the RPO
    daemon.monitor.refresh()
    assert sample("lifeboat_status_refresh_failing") == 1
    assert sample("lifeboat_exposure_seconds", {"asset": "docs"}) >= 86400 + 7200
    assert "exceeds RPO" in daemon.alerts.active["rpo:docs"]  # as a refresh would have said
    assert "status-refresh" not in daemon.alerts.active  # one failure is not yet an outage
    ticks[0] += monitor.STALE_ALERT_AFTER_S
    daemon.monitor.refresh()
    assert "status-refresh" in daemon.alerts.active
    assert "stale" in daemon.alerts.active["status-refresh"]

    (tmp_path / "away").rename(tmp_path / "repo")
    daemon.monitor.refresh()
    assert sample("lifeboat_status_refresh_failing") == 0
    assert "status-refresh" not in daemon.alerts.active
    assert sample("lifeboat_exposure_seconds", {"asset": "docs"}) >= 86400 + 7200  # as status says
    assert sample("lifeboat_status_breaches", {"asset": "docs"}) >= 1  # the RPO, a day on
