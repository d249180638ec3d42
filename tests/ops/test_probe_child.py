"""The child process one-shot `status` asks its probes in (ops/probe_child.py): answers
come back from another process, the drivers it imports stay out of the parent, what a
probe raises is raised, and the child never outlives its parent. Each case runs in a
fresh interpreter: only a process with one thread forks."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
from typing import Any

ASKING = """
import json, os, sys, threading
from lifeboat.ops.probe_child import ProbeChild, ProbeRaised

def prepare():
    import decimal  # a "driver" the parent never imports

def where():
    return {"pid": os.getpid(), "driver": "decimal" in sys.modules}

def broken():
    raise RuntimeError("a kind's bug")

def unpicklable():
    return threading.Lock()

def dies():
    os._exit(3)

def hangs():
    threading.Event().wait()

def outcome(future):
    try:
        return ["answer", future.result(timeout=120)]
    except ProbeRaised as exc:
        return ["raised", str(exc)]
"""


def run_script(body: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(ASKING) + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, **kwargs
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_probes_are_asked_in_a_child_that_imported_their_driver() -> None:
    proc = run_script(
        """
        child = ProbeChild.start(prepare)
        asked = {"where": child.ask("where", where), "broken": child.ask("broken", broken)}
        asked["unpicklable"] = child.ask("unpicklable", unpicklable)
        not_sent = child.ask("lambda", lambda: 1)
        child.done_asking()
        print(json.dumps({
            "parent": os.getpid(),
            "parent_has_driver": "decimal" in sys.modules,
            "outcomes": {name: outcome(f) for name, f in asked.items()},
            "not_sent": not_sent is None,
        }))
        """
    )
    seen = json.loads(proc.stdout)
    kind, where = seen["outcomes"]["where"]
    assert kind == "answer" and where["pid"] != seen["parent"]  # asked in another process
    assert where["driver"] is True and seen["parent_has_driver"] is False
    assert seen["outcomes"]["broken"] == ["raised", "RuntimeError: a kind's bug"]
    kind, message = seen["outcomes"]["unpicklable"]
    assert kind == "raised" and "pickle" in message
    assert seen["not_sent"] is True  # the caller asks that one itself


def test_a_child_that_dies_gives_no_answer() -> None:
    proc = run_script(
        """
        child = ProbeChild.start(prepare)
        asked = [child.ask("dies", dies), child.ask("where", where)]
        child.done_asking()
        print(json.dumps([f.result(timeout=120) for f in asked]))
        """
    )
    answers = json.loads(proc.stdout)
    assert answers[0] is None  # the child ended before it answered
    assert answers[1] is None or answers[1]["driver"] is True


def test_no_child_is_forked_while_another_thread_runs() -> None:
    proc = run_script(
        """
        threading.Thread(target=threading.Event().wait, daemon=True).start()
        print(json.dumps(ProbeChild.start(prepare) is None))
        """
    )
    assert json.loads(proc.stdout) is True


def test_the_child_does_not_outlive_its_parent() -> None:
    """A probe that never answers (a server that took the connection): the parent exits
    without its answer, and the child goes with it. The pipe's write end is inherited by
    the parent and its child: it reads EOF once both are gone."""
    readable, writable = os.pipe()
    try:
        run_script(
            f"""
            child = ProbeChild.start(prepare)
            assert child.ask("hangs", hangs) is not None
            child.done_asking()
            os.write({writable}, b"x")  # the parent asked, and exits now
            """,
            pass_fds=(writable,),
        )
        os.close(writable)
        writable = -1
        assert os.read(readable, 1) == b"x"
        ready, _, _ = select.select([readable], [], [], 120)
        assert ready, "a probe's child process outlived its parent"
        assert os.read(readable, 1) == b""
    finally:
        os.close(readable)
        if writable >= 0:
            os.close(writable)


def test_a_driver_that_does_not_load_is_said_for_each_probe() -> None:
    proc = run_script(
        """
        import functools
        from lifeboat.errors import LifeboatError
        from lifeboat.ops.probe_child import import_drivers

        child = ProbeChild.start(functools.partial(import_drivers, ["lifeboat_no_such_driver"]))
        asked = [child.ask("one", where), child.ask("two", where)]
        child.done_asking()
        said = []
        for future in asked:
            try:
                future.result(timeout=120)
            except LifeboatError as exc:
                said.append([exc.message, exc.hint])
        print(json.dumps(said))
        """
    )
    message = "a status probe's driver does not load (lifeboat_no_such_driver): "
    message += "No module named 'lifeboat_no_such_driver'"
    hint = "the installation is broken: reinstall lifeboat"
    assert json.loads(proc.stdout) == [[message, hint], [message, hint]]


def test_a_probe_that_says_why_it_fails_says_it_as_in_process() -> None:
    proc = run_script(
        """
        from lifeboat.errors import LifeboatError

        def refused():
            raise LifeboatError("the server refused", hint="grant it")

        child = ProbeChild.start(prepare)
        asked = child.ask("refused", refused)
        child.done_asking()
        try:
            asked.result(timeout=120)
        except LifeboatError as exc:
            print(json.dumps([type(exc).__name__, exc.message, exc.hint]))
        """
    )
    assert json.loads(proc.stdout) == ["LifeboatError", "the server refused", "grant it"]


def test_no_child_when_fork_fails_and_no_descriptor_left_open() -> None:
    proc = run_script(
        """
        def fork():
            raise BlockingIOError(11, "Resource temporarily unavailable")  # a pids limit

        before = sorted(os.listdir("/proc/self/fd"))
        os.fork = fork
        started = ProbeChild.start(prepare)
        print(json.dumps([started is None, sorted(os.listdir("/proc/self/fd")) == before]))
        """
    )
    assert json.loads(proc.stdout) == [True, True]
