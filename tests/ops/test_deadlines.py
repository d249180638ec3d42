"""Overall deadlines and stall alerts: a backup that runs past its asset's timeout is
stopped cleanly (CLI and daemon), and the daemon alerts on stalls and deadlines, against
the moto server behind a proxy that hangs or slows requests and a real webhook receiver."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest

from lifeboat.assets.registry import load_policy
from lifeboat.daemon.runner import Daemon, build_jobs
from tests.harness import LifeboatCli, PolicyBuilder
from tests.harness.stallproxy import StallProxy


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    arrived: ClassVar[threading.Event] = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        Receiver.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        Receiver.arrived.set()
        self.send_response(204)
        self.end_headers()


@pytest.fixture
def webhook() -> Iterator[str]:
    Receiver.received = []
    Receiver.arrived = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


@pytest.fixture
def proxy(s3_server: str) -> Iterator[StallProxy]:
    p = StallProxy(s3_server)
    yield p
    p.close()


def setup_env(
    root: Path, bucket: str, proxy: StallProxy, webhook: str, *, stall: str = "60s", timeout: str = ""
) -> Path:
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_bytes(b"a\n")
    (root / "docs" / "big.bin").write_bytes(os.urandom(12 << 20))  # a pack or more to upload
    policy = (
        PolicyBuilder()
        .s3_repository(proxy.endpoint, bucket, stall_timeout=stall, recovery_key="keys/recovery.key")
        .data_class("standard", rpo="1h", rto="1h")
        .files("docs", [root / "docs"], schedule="0 3 * * *", timeout=timeout or None)
        .webhook(webhook)
        .daemon(retries=0)
        .write(root / "lifeboat.toml")
    )
    init = lifeboat(policy, "init")
    assert init.returncode == 0, init.stderr
    return policy


def lifeboat(policy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return LifeboatCli(policy, timeout=120).run(*args, check=False)


def assert_nothing_left(policy: Path, s3_server: str, bucket: str, *, lock_released: bool = True) -> None:
    snapshots = lifeboat(policy, "snapshots", "--json")
    assert json.loads(snapshots.stdout) == []  # nothing half-committed
    locks = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=bucket, Prefix="repo/locks/")
    if lock_released:
        assert locks.get("KeyCount", 0) == 0  # the stopped backup released its lock
    check = lifeboat(policy, "check")
    assert check.returncode == 0, check.stdout + check.stderr


def backup_job(policy_path: Path) -> tuple[Daemon, Any]:
    policy = load_policy(policy_path)
    job = next(j for j in build_jobs(policy) if j.name == "backup:docs")
    return Daemon(policy, jobs=[job]), job


def runs(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / ".lifeboat" / "runs.jsonl").read_text().splitlines()]


def test_a_cli_backup_stops_at_its_assets_timeout(tmp_path, s3_server, make_bucket, proxy, webhook):
    bucket = make_bucket(object_lock=False)
    policy = setup_env(tmp_path, bucket, proxy, webhook, timeout="1s")
    proxy.delay_from, proxy.delay = f"PUT /{bucket}/repo/data/", 4.0  # slow, not stalled

    stopped = lifeboat(policy, "backup", "docs")

    assert stopped.returncode == 1, stopped.stderr
    assert "Traceback" not in stopped.stderr
    first = stopped.stderr.strip().splitlines()[0]
    assert first == "lifeboat: error: backup of docs stopped: it ran past its timeout of 1s"
    proxy.forward_normally()
    assert_nothing_left(policy, s3_server, bucket)


def test_the_daemon_alerts_when_a_backup_stalls(tmp_path, s3_server, make_bucket, proxy, webhook):
    bucket = make_bucket(object_lock=False)
    policy = setup_env(tmp_path, bucket, proxy, webhook, stall="1s")
    proxy.hang_from = f"PUT /{bucket}/repo/data/"
    daemon, job = backup_job(policy)

    daemon.run_job(job)  # returns on its own: the stall is detected, nothing waits forever

    assert Receiver.arrived.is_set()
    alert = next(m for m in Receiver.received if m["condition"] == "job-failed:backup:docs")
    assert alert["status"] == "firing"
    assert f"127.0.0.1:{proxy.port} stopped answering" in alert["message"]
    assert [r["outcome"] for r in runs(tmp_path)] == ["failed"]
    proxy.forward_normally()
    # the lock could not be removed from a store that stopped answering: its process is
    # gone, so it does not hold up the next run (which succeeds below)
    assert_nothing_left(policy, s3_server, bucket, lock_released=False)
    daemon.run_job(job)  # the endpoint answers again: the next run succeeds and the alert clears
    assert [r["outcome"] for r in runs(tmp_path)] == ["failed", "ok"]
    statuses = [m["status"] for m in Receiver.received if m["condition"] == "job-failed:backup:docs"]
    assert statuses == ["firing", "resolved"]


def test_the_daemon_stops_a_backup_at_its_timeout_and_alerts(
    tmp_path, s3_server, make_bucket, proxy, webhook
):
    bucket = make_bucket(object_lock=False)
    policy = setup_env(tmp_path, bucket, proxy, webhook, timeout="2s")
    proxy.delay_from, proxy.delay = f"PUT /{bucket}/repo/data/", 4.0
    daemon, job = backup_job(policy)

    daemon.run_job(job)

    alert = next(m for m in Receiver.received if m["condition"] == "deadline:backup:docs")
    assert alert["status"] == "firing" and "ran past its timeout of 2s" in alert["message"]
    [run] = runs(tmp_path)
    assert run["outcome"] == "failed" and run["attempt"] == 1  # not retried: it would run as long
    audit = [json.loads(line) for line in (tmp_path / ".lifeboat" / "audit.jsonl").read_text().splitlines()]
    stopped = [e for e in audit if e["operation"] == "backup"]
    # who ran it: the daemon (free text); who signed it: the host's writer identity
    assert [(e["asset"], e["outcome"], e["operator"]) for e in stopped] == [("docs", "failed", "daemon")]
    assert all(e["actor"] == e["writer"] and e["writer"] for e in stopped)
    proxy.forward_normally()
    assert_nothing_left(policy, s3_server, bucket)


def test_a_backup_stopped_before_its_child_began_is_audited_by_the_daemon(
    tmp_path, s3_server, make_bucket, proxy, webhook, monkeypatch
):
    from datetime import datetime, timedelta

    from lifeboat.daemon import jobs

    bucket = make_bucket(object_lock=False)
    policy = setup_env(tmp_path, bucket, proxy, webhook, timeout="2s")
    # the deadline has passed as the child starts: it is stopped while still importing,
    # before its backup service could log anything (a loaded host, a short timeout)
    past = datetime.now() - timedelta(seconds=1)
    monkeypatch.setattr(jobs, "job_deadline", lambda *_args, **_kw: (past, "timeout"))
    daemon, job = backup_job(policy)

    daemon.run_job(job)

    audit = [json.loads(line) for line in (tmp_path / ".lifeboat" / "audit.jsonl").read_text().splitlines()]
    stopped = [e for e in audit if e["operation"] == "backup"]
    assert [(e["asset"], e["outcome"], e["operator"], e["details"]["error"]) for e in stopped] == [
        ("docs", "failed", "daemon", "stopped at its deadline before it began")
    ]
    assert [r["outcome"] for r in runs(tmp_path)] == ["failed"]


def test_a_jobs_deadline_is_the_earliest_of_its_timeout_its_window_end_and_a_day():
    from datetime import datetime, timedelta

    from lifeboat.ops.scheduler import job_deadline
    from lifeboat.policy import Window

    start = datetime(2026, 11, 25, 1, 30)
    window = Window.parse("01:00-05:00")
    assert job_deadline(start) == (start + timedelta(days=1), "timeout")
    assert job_deadline(start, window) == (start + timedelta(days=1), "timeout")  # overrun: alerted only
    assert job_deadline(start, window, True) == (datetime(2026, 11, 25, 5, 0), "window")
    assert job_deadline(start, window, True, timedelta(hours=1)) == (datetime(2026, 11, 25, 2, 30), "timeout")
    assert job_deadline(start, window, True, timedelta(hours=9)) == (datetime(2026, 11, 25, 5, 0), "window")


# The alarm can land while the main thread holds a lock that is not re-entrant; the unwind
# that then needs the same lock waits forever. This process does exactly that, on purpose.
STUCK_UNWIND = """
import threading
from datetime import timedelta
from lifeboat.ops.deadline import deadline

held = threading.Lock()
with deadline(timedelta(seconds=1), "backup of docs stopped: it ran past its timeout of 1s",
              grace=timedelta(seconds=1)):
    try:
        held.acquire()
        threading.Event().wait()  # where the alarm lands, the lock held
    finally:
        held.acquire()  # the unwind needs the lock: it never returns
"""


def test_a_stopped_backup_whose_unwind_hangs_is_ended_after_its_grace():
    import sys

    ended = subprocess.run([sys.executable, "-c", STUCK_UNWIND], capture_output=True, text=True, timeout=120)

    assert ended.returncode == 1
    assert ended.stderr == (
        "lifeboat: error: backup of docs stopped: it ran past its timeout of 1s;"
        " it had not stopped 1s later, so it was ended\n"
    )


def test_a_job_that_ends_in_time_leaves_no_watchdog_behind():
    from datetime import timedelta

    from lifeboat.ops.deadline import deadline

    stuck: list[str] = []
    with deadline(timedelta(hours=1), "stopped", grace=timedelta(0), stuck=stuck.append):
        watchdogs = [t for t in threading.enumerate() if t.name == "deadline-watchdog"]
        assert len(watchdogs) == 1
    watchdogs[0].join(timeout=30)
    assert not watchdogs[0].is_alive()
    assert stuck == []


def test_a_job_stopped_at_its_deadline_that_unwinds_is_not_ended():
    from datetime import timedelta

    from lifeboat.ops.deadline import DeadlineExceeded, deadline

    stuck: list[str] = []
    limit, grace = timedelta(milliseconds=50), timedelta(hours=1)
    with (
        pytest.raises(DeadlineExceeded, match=r"^stopped$"),
        deadline(limit, "stopped", grace=grace, stuck=stuck.append),
    ):
        watchdogs = [t for t in threading.enumerate() if t.name == "deadline-watchdog"]
        threading.Event().wait(60)  # the alarm ends this wait
    watchdogs[0].join(timeout=30)
    assert not watchdogs[0].is_alive()  # the unwind ended it, long before its grace ran out
    assert stuck == []
