"""The one way tests run lifeboat: the real executable in a subprocess.

``LifeboatCli`` runs ``python -m lifeboat --config POLICY ...`` (as another OS user via
``runuser`` when asked), with the environment it was given plus the controlled clock's
offset, and returns the ``CompletedProcess``. ``run`` forks the command from a server that
has already imported lifeboat (``forkserver.py``: same process set-up, a third of the
suite's CPU saved); ``popen`` and ``command`` are the plain interpreter. Every run is
checked for what a user must never see, whatever the test expects otherwise: a Python
traceback or an internal error (exit 70).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.harness.clock import Clock, real_env
from tests.harness.wait import wait_until

INTERNAL_ERROR = 70
FORKSERVER = Path(__file__).with_name("forkserver.py")
_servers: dict[int, str] = {}  # pid of this pytest worker -> its fork server's socket
_starting = threading.Lock()  # tests run lifeboat from threads: one server per worker


def fork_server() -> str | None:
    """This worker's fork server socket, started on first use; None when it is off (the
    environment says so, or coverage must trace each process from its start)."""
    coverage = os.environ.get("COVERAGE_PROCESS_START") or os.environ.get("COVERAGE_PROCESS_CONFIG")
    if os.environ.get("LIFEBOAT_TEST_FORKSERVER") == "0" or coverage:
        return None
    with _starting:
        if os.getpid() not in _servers:
            _servers[os.getpid()] = _start_fork_server()
        return _servers[os.getpid()]


def _start_fork_server() -> str:
    directory = tempfile.mkdtemp(prefix="lb-fork-")
    path = os.path.join(directory, "socket")
    server = subprocess.Popen(
        [sys.executable, str(FORKSERVER), "--serve", path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        env=real_env(),
    )
    assert server.stdout is not None and server.stdout.readline() == "ready\n", "fork server did not start"
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    atexit.register(server.kill)
    return path


def assert_no_crash(proc: subprocess.CompletedProcess[str], what: str = "lifeboat") -> None:
    """A failure must be a one-line error, not a traceback or an internal error."""
    stderr = proc.stderr or ""
    assert "Traceback (most recent call last)" not in stderr, f"{what} printed a traceback:\n{stderr}"
    assert proc.returncode != INTERNAL_ERROR, f"{what} hit an internal error:\n{stderr}"


@dataclass
class LifeboatCli:
    """A policy and the environment lifeboat runs in; ``run`` is a real lifeboat process."""

    policy: Path | None = None
    env: dict[str, str] = field(default_factory=real_env)
    user: str | None = None  # run as this OS user (runuser), e.g. the clusters' `postgres`
    cwd: Path | None = None
    clock: Clock = field(default_factory=Clock)
    timeout: float = 300
    outputs: list[str] = field(default_factory=list)  # every stdout and stderr, for leak checks

    def command(self, *args: str) -> list[str]:
        cmd = [sys.executable, "-m", "lifeboat"]
        if self.policy is not None:
            cmd += ["--config", str(self.policy)]
        cmd += list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return cmd

    def environment(self, **extra: str) -> dict[str, str]:
        """The child's environment: the runner's, its clock's offset, then ``extra`` over both."""
        return {**self.clock.apply(self.env), **extra}

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one lifeboat command to its end; with ``check`` a non-zero exit fails the test."""
        cmd = self.command(*args)
        server = None if self.user else fork_server()
        if server is not None:  # the same argv, through the fork server's client
            cmd = [sys.executable, "-I", "-S", str(FORKSERVER), server, *cmd[3:]]
        return self.shell(cmd, check=check, timeout=timeout, input=input, env=env)

    def shell(
        self,
        cmd: list[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run any command in this runner's environment (clock included), e.g. a runbook."""
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,  # never a terminal to ask on
            env=self.environment(**(env or {})),
            timeout=timeout or self.timeout,
            cwd=self.cwd,
        )
        self.outputs += [proc.stdout, proc.stderr]
        assert_no_crash(proc, " ".join(cmd[-6:]))
        if check and proc.returncode != 0:
            what = " ".join(cmd[-6:])
            raise AssertionError(
                f"{what} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def json(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> Any:
        """``run(*args, "--json")`` parsed; the command must print exactly one JSON document."""
        proc = self.run(*args, "--json", check=check, env=env)
        return json.loads(proc.stdout)

    def popen(self, *args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[Any]:
        """Start a lifeboat command without waiting (daemon, wal stream, a backup to kill)."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(self.command(*args), env=self.environment(**(env or {})), cwd=self.cwd, **kw)

    def lifeboat_pid(self, proc: subprocess.Popen[Any]) -> int:
        """The pid of the lifeboat process ``popen`` started (runuser's child when run as
        another user: runuser does not pass SIGTERM or SIGKILL on)."""
        if not self.user:
            return proc.pid
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")

        def child() -> int | None:
            assert proc.poll() is None, "the lifeboat process ended before it could be signalled"
            pids = children.read_text().split()
            return int(pids[0]) if pids else None

        return wait_until(child, "runuser to start lifeboat", timeout=30, interval=0.001)

    def signal(self, proc: subprocess.Popen[Any], sig: int) -> None:
        """Send ``sig`` to the lifeboat process itself."""
        os.kill(self.lifeboat_pid(proc), sig)

    def at(self, offset: float) -> LifeboatCli:
        """The same runner with its own clock ``offset`` seconds away (negative: the past)."""
        return replace(self, clock=Clock(self.clock.offset + offset))
