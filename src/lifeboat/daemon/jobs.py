"""What the daemon runs: the jobs a policy schedules (backups stopped at their deadline,
checks, a part of the data read, retention, drills, copies, and the kinds' extra jobs),
each a callable returning the bytes it added."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lifeboat import runtime
from lifeboat.assets.registry import kind_of
from lifeboat.crypto.credentials import Credentials
from lifeboat.daemon.backup_child import ChildOutcome, backup_in_child
from lifeboat.errors import LifeboatError
from lifeboat.ops.deadline import DeadlineExceeded
from lifeboat.ops.replication import copy_job
from lifeboat.ops.scheduler import DEFAULT_TIMEOUT, job_deadline
from lifeboat.policy import Policy, Window, format_duration
from lifeboat.private import write_private
from lifeboat.redact import redact
from lifeboat.services.backup import AssetBackup, Failure
from lifeboat.services.check import check_in
from lifeboat.services.retention import retention
from lifeboat.services.session import reading, writing

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass
class Job:
    """One scheduled piece of work: a backup, check, retention, drill or a kind's extra job."""

    name: str  # e.g. backup:maindb, check, retention, drill:monthly, wal-drain:maindb
    asset: str | None
    run: Callable[[], int]  # returns bytes added (0 when not meaningful)
    schedule: str | None = None  # cron; None: every `every`
    every: timedelta | None = None
    window: Window | None = None
    next_at: datetime = EPOCH


def build_jobs(policy: Policy, log: Callable[[str], None] = lambda _: None) -> list[Job]:
    """Every job the policy schedules: backups, checks, retention, drills, the kinds' extras."""
    jobs: list[Job] = []
    for name, asset in policy.assets.items():
        if asset.schedule:
            run = _backup_with_deadline(
                policy, name, asset.window, stop_at_window_end=asset.stop_at_window_end, timeout=asset.timeout
            )
            jobs.append(Job(f"backup:{name}", name, run, schedule=asset.schedule, window=asset.window))
        extras = kind_of(asset).daemon_jobs(policy, name, lambda: runtime.open_for_write(policy))
        for extra in extras:  # WAL drain and continuity, ...
            jobs.append(Job(extra.name, name, extra.run, every=extra.every))

    def check() -> int:
        with writing(policy) as session:
            report = check_in(session)
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
        jobs.append(Job(f"drill:{name}", None, _drill(policy, name, log), every=drill.every))
    for name, copy in policy.copies.items():
        jobs.append(Job(f"copy:{name}", None, copy_job(policy, name), schedule=copy.schedule))
    return jobs


class StoppedAtWindowEnd(LifeboatError):
    """A heavy backup stopped because its off-peak window closed."""


def _backup_until_window_end(policy: Policy, name: str, window: Window | None) -> Callable[[], int]:
    return _backup_with_deadline(policy, name, window, stop_at_window_end=True)


def _backup_with_deadline(
    policy: Policy,
    name: str,
    window: Window | None = None,
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
        outcome = backup_in_child(Path(policy.path), name, deadline)
        _audit_if_the_child_could_not(policy, name, outcome)
        result = outcome.result
        failure = result if isinstance(result, Failure) else result.failure if result else None
        ok = isinstance(result, AssetBackup) and result.snapshot is not None and failure is None
        # past the deadline: stopped here, or by the child's own timeout, which it armed later
        if not ok and (outcome.stopped or datetime.now() >= deadline or (failure and failure.deadline)):
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
        if failure is not None:
            raise LifeboatError(redact(failure.message))
        if not isinstance(result, AssetBackup) or result.snapshot is None:
            raise LifeboatError(f"backup exited {outcome.exitcode}")
        return result.snapshot.stats.stored_bytes

    return run


def _audit_if_the_child_could_not(policy: Policy, name: str, outcome: ChildOutcome) -> None:
    """A child stopped (or dead) before its backup service began logs nothing: a deadline
    landing while it was still starting (2 s of imports on a loaded host) or a crash. The
    daemon records that failure itself, so every backup it ran leaves an audit entry."""
    if outcome.result is not None or outcome.pid is None:
        return  # the child reported: its service logged the outcome
    log = runtime.audit_log(policy)
    if not log.recorded_by(outcome.pid, "backup", name):
        why = "stopped at its deadline" if outcome.stopped else f"exited {outcome.exitcode}"
        log.append("backup", asset=name, outcome="failed", actor="daemon", error=f"{why} before it began")


def _read_data_part(policy: Policy) -> Callable[[], int]:
    """Reads the next part of the packs, so every pack is read once per read_data_every.
    With the recovery key configured every chunk is decrypted and verified; without it
    (a backup host) each pack is checked against its content hash."""
    state = Path(policy.state_dir) / "read-data.json"

    def run() -> int:
        parts = policy.daemon.read_data_parts
        part = json.loads(state.read_text()).get("next_part", 1) if state.exists() else 1
        part = part if 1 <= part <= parts else 1
        with ExitStack() as stack:
            if policy.repository.recovery_key:
                opened = reading(policy, Credentials(), purpose="check --read-data")
            else:
                opened = writing(policy)
            session = stack.enter_context(opened)
            hash_only = not session.repo.keyring.can_read
            report = check_in(session, read_data=True, subset=f"{part}/{parts}", hash_only=hash_only)
        write_private(state, json.dumps({"next_part": part % parts + 1, "last_part": part}).encode())
        if not report.ok:
            raise LifeboatError(
                f"check --read-data-subset {part}/{parts} found {len(report.problems)} problem(s): "
                f"{report.problems[0].message}"
            )
        read: int = report.bytes_read
        return read

    return run


def _retention(policy: Policy) -> Callable[[], int]:
    def run() -> int:
        result = retention(policy, Credentials())
        return -result.prune.bytes_removed

    return run


def _drill(policy: Policy, name: str, log: Callable[[str], None]) -> Callable[[], int]:
    def run() -> int:
        from lifeboat.services.drills import run_drill

        # the drill's own lines (a copy's retired key, a drill key issued) in the daemon's log
        result, bundle = run_drill(policy, name, Credentials(), log=lambda line: log(f"drill:{name}: {line}"))
        if result.verdict != "pass":
            raise LifeboatError(f"drill {name} failed: {'; '.join(result.reasons)[:300]} (evidence {bundle})")
        return 0

    return run
