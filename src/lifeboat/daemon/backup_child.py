"""The daemon's backups run the backup service in a child process, so a backup can be
stopped at its deadline: a thread stuck in a transfer cannot be stopped, a process can.

The child is spawned (never forked: the daemon has threads, and a forked copy of a lock
held by one of them would never be released), loads the policy, runs the service and
sends its typed outcome back over a pipe. As with any spawned child, a script that embeds
the daemon must guard its entry point with ``if __name__ == "__main__":`` (the `lifeboat`
command and `python -m lifeboat` do)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from lifeboat.errors import LifeboatError
from lifeboat.internal_error import record_internal_error
from lifeboat.redact import redact
from lifeboat.services.backup import AssetBackup, Failure

STOP_GRACE = 60.0  # seconds a stopped backup gets to unwind before it is killed


@dataclass
class ChildOutcome:
    """What the child sent (None: nothing, it was stopped or died), and whether it was stopped."""

    result: AssetBackup | Failure | None
    stopped: bool
    exitcode: int | None
    pid: int | None = None


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: locks released, nothing half-committed


def _child(config: str, name: str, conn: Connection) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ["LIFEBOAT_ACTOR"] = "daemon"  # the audit entry says who ran it
    from lifeboat import memory
    from lifeboat.assets.registry import load_policy
    from lifeboat.services.backup import backup

    memory.limit_arenas()
    try:
        report = backup(load_policy(Path(config)), [name])
        # done: a deadline landing now must not turn a committed backup into "stopped"
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        conn.send(report.assets[0])
    except LifeboatError as exc:  # before the backup began: the policy, the key, the state dir
        conn.send(Failure.of(exc))
    except KeyboardInterrupt:
        pass  # stopped at its deadline: the parent knows
    except Exception as exc:  # a bug: the daemon reports it as the job's failure
        record_internal_error(exc)
        conn.send(Failure(redact(f"{type(exc).__name__}: {exc}")))
        conn.close()
        # not re-raised: multiprocessing would print the traceback, unredacted, into the
        # daemon's log; the failure went to the parent, the internal-error log has the bug
        os._exit(70)
    finally:
        conn.close()


def backup_in_child(config: Path, name: str, deadline: datetime) -> ChildOutcome:
    """Back up ``name`` in a spawned child; at ``deadline`` (local time) it gets SIGTERM,
    then SIGKILL after STOP_GRACE."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(str(config), name, sender), name=f"backup-{name}")
    proc.start()
    sender.close()  # the child holds the only writer: its exit ends the pipe
    try:
        result, stopped = _collect(proc, receiver, deadline)
    finally:
        receiver.close()
    return ChildOutcome(result, stopped, proc.exitcode, proc.pid)


def _collect(
    proc: BaseProcess, receiver: Connection, deadline: datetime
) -> tuple[AssetBackup | Failure | None, bool]:
    """The child's outcome once it exits; reads as it waits, so a child never blocks on
    a full pipe."""
    result: AssetBackup | Failure | None = None
    waiting: list[Connection | int] = [receiver, proc.sentinel]
    stopped, kill_at = False, 0.0
    while proc.sentinel in waiting:
        if not stopped and datetime.now() >= deadline:
            proc.terminate()
            stopped, kill_at = True, time.monotonic() + STOP_GRACE
        if stopped and time.monotonic() >= kill_at:
            proc.kill()
            proc.join()
            break
        left = kill_at - time.monotonic() if stopped else (deadline - datetime.now()).total_seconds()
        # a deadline is checked at least once a second, whatever the wait
        for ready in wait(waiting, timeout=max(0.0, min(left, 1.0))):
            if ready is receiver:
                waiting.remove(receiver)
                try:
                    result = receiver.recv()
                except EOFError:
                    pass  # the child ended without a word
            else:
                waiting.remove(proc.sentinel)
    if receiver in waiting and receiver.poll():
        try:
            result = receiver.recv()
        except EOFError:
            pass
    proc.join()
    return result, stopped
