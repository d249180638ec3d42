"""A fork server for the suite's lifeboat runs: the interpreter starts and imports once.

The suite starts about 4,000 lifeboat processes. Each one spent ~0.4 s of CPU starting
Python and importing pydantic, typer, rich, cryptography and lifeboat itself before doing
anything: a third of the whole suite's CPU on 2 cores. Here one server per pytest worker
imports all of that once; every `LifeboatCli.run` then forks it. The command still runs
in its own process with the test's argv, environment, working directory, umask and
standard streams (passed as file descriptors), and exits with its own code or signal:
only the start-up is shared.

Three processes per run:
  client  `python -I -S forkserver.py SOCKET ARGS...`, what `subprocess.run` starts: it
          sends its argv, environment, cwd, umask and fds 0-2, forwards SIGTERM/SIGINT to
          the command, and exits as the command did (a signal: killed by the same signal);
  handler forked by the server per connection: forks the command, reports its pid, kills
          it if the client goes away (a test's timeout), reports how it ended;
  command forked by the handler: sets up the process as a fresh `python -m lifeboat`
          would be, runs `lifeboat.cli.entry.main`, then exits as the interpreter does
          (threads joined, atexit run, streams flushed).

Processes that tests signal or measure (`popen`, peak RSS probes), runs as another OS user,
coverage runs, runbooks, the demo and PostgreSQL's archive_command still start a real
interpreter, and tests/cli/test_startup.py checks what a fresh one imports. What a fork
cannot show: an import that works only because another module was imported first (every
module is loaded in the server), output of the interpreter's own shutdown (`Exception
ignored in ...`), a PYTHONHASHSEED per run (every fork has the server's). Run the suite
with `LIFEBOAT_TEST_FORKSERVER=0` to start a real interpreter for every run.
"""

from __future__ import annotations

import array
import json
import os
import select
import signal
import socket
import struct
import sys

HEADER = struct.Struct("!I")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
FAILED = 71  # the harness itself failed (lifeboat's internal error is 70)


# --- client (runs under `python -I -S`: stdlib only) ---------------------------------------


def client(path: str, args: list[str]) -> None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    umask = os.umask(0)
    os.umask(umask)
    body = json.dumps({"argv": args, "env": dict(os.environ), "cwd": os.getcwd(), "umask": umask}).encode()
    fds = array.array("i", [0, 1, 2])
    conn.sendmsg([HEADER.pack(len(body)), body], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    reader = conn.makefile("r")
    line = reader.readline()
    if not line:
        fail("the fork server's handler ended before starting the command")
    pid = int(line)
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: os.kill(pid, signum))
    how, _, value = reader.readline().partition(" ")
    if how == "signal":
        sig = int(value)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    if how != "exit":
        fail(f"the fork server's handler ended without the status of command {pid}")
    os._exit(int(value))


def fail(why: str) -> None:
    """A harness failure, told apart from anything lifeboat exits with."""
    sys.stderr.write(f"forkserver: {why}\n")
    os._exit(FAILED)


# --- server ----------------------------------------------------------------------------------


def preload() -> None:
    """Everything a lifeboat command may import, imported once (and the plug-in stub that
    `main` installs, before pydantic is first imported)."""
    import importlib
    import pkgutil

    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    os.environ.setdefault("BOTO_DISABLE_CRT", "true")  # as main() sets it, before botocore loads
    from lifeboat.cli import entry

    entry._no_pydantic_plugins()
    import lifeboat

    for module in pkgutil.walk_packages(lifeboat.__path__, "lifeboat."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    for name in ("boto3", "botocore.session", "psycopg"):
        importlib.import_module(name)


def serve(path: str) -> None:
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # tests/harness is not on a lifeboat process's path
    preload()
    import gc
    import threading

    assert threading.active_count() == 1, "a thread at fork time would be missing in every command"
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped by the kernel
    gc.freeze()  # the imported objects stay shared with every fork (no copy on GC's write)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while os.getppid() == parent:  # the pytest worker that started it is gone: so is it
        if not select.select([listener], [], [], 1.0)[0]:
            continue
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            try:
                handle(conn)
            finally:
                os._exit(0)
        conn.close()


def receive(conn: socket.socket) -> tuple[dict, list[int]]:
    fds = array.array("i")
    data, ancdata, _, _ = conn.recvmsg(HEADER.size, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    (size,) = HEADER.unpack(data)
    body = b""
    while len(body) < size:
        part = conn.recv(size - len(body))
        if not part:
            raise EOFError("the client went away before its request was whole")
        body += part
    return json.loads(body), list(fds)


def handle(conn: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    request, fds = receive(conn)
    pid = os.fork()
    if pid == 0:
        conn.close()
        run_command(request, fds)
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(f"{pid}\n".encode())
    except OSError:  # the client is already gone: so is its command
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return
    pidfd = os.pidfd_open(pid)
    while True:
        ready = select.select([conn, pidfd], [], [])[0]
        if pidfd in ready:
            break
        if not conn.recv(1):  # the client is gone (a test's timeout killed it)
            os.kill(pid, signal.SIGKILL)
            break
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        reply = f"signal {os.WTERMSIG(status)}\n"
    else:
        reply = f"exit {os.WEXITSTATUS(status)}\n"
    try:
        conn.sendall(reply.encode())
    except OSError:
        pass


def run_command(request: dict, fds: list[int]) -> None:
    """In the command's process: what a fresh `python -m lifeboat ARGS` would be."""
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        import tempfile
        import time

        time.tzset()
        tempfile.tempdir = None
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        package = os.path.dirname(sys.modules["lifeboat"].__file__ or "")
        sys.argv = [os.path.join(package, "__main__.py"), *request["argv"]]
    except BaseException:  # a process that could not be set up: the harness failed
        os._exit(FAILED)
    code = exit_code_of(main)
    finish(code)


def main() -> None:
    from lifeboat.cli.entry import main as lifeboat_main

    lifeboat_main()


def exit_code_of(function) -> int:  # type: ignore[no-untyped-def]
    """The code the interpreter would exit with after ``function`` (as `sys.exit` maps it)."""
    try:
        function()
        return 0
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        sys.stderr.write(f"{exc.code}\n")
        return 1
    except BaseException:  # an uncaught error: the interpreter's traceback
        import traceback

        traceback.print_exc()
        return 1


def finish(code: int) -> None:
    """The interpreter's shutdown, as far as a command can tell: non-daemon threads joined,
    atexit handlers run, standard streams flushed."""
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except BaseException:
        code = code or 1
    os._exit(code & 0xFF)


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        client(sys.argv[1], sys.argv[2:])
