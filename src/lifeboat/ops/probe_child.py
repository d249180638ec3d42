"""The child process one-shot `status` asks its probes in. It is forked first thing, while
the parent has one thread and has imported little; it imports the probes' drivers
(psycopg: ~80 ms of CPU) on the other core while the parent reads its policy and
repository, then asks each probe the parent sends it on a thread of its own. The child
dies with the parent (Linux's parent-death signal): a server that never answers leaves
no process behind.

Both ways the pipe carries length-prefixed pickles: the parent sends ``(name, ask)``
(closing its end when it has asked them all), the child answers ``(name, outcome,
value)``; what a probe raised travels as its type and message."""

from __future__ import annotations

import gc
import importlib
import os
import signal
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

from lifeboat.errors import LifeboatError

if TYPE_CHECKING:
    from concurrent.futures import Future

# pickle and concurrent.futures (logging with it: ~10 ms) are imported after the fork: the
# sooner the child starts, the sooner its drivers are in

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_LENGTH = struct.Struct(">I")


class ProbeRaised(RuntimeError):
    """What a probe raised in the child, by type and message (the exception may not pickle)."""


def import_drivers(modules: Iterable[str]) -> None:
    """The modules status probes ask with (``AssetKind.status_probe_imports``); one that
    does not import is a broken installation, said in one line."""
    for module in modules:
        try:
            importlib.import_module(module)
        except (ImportError, OSError) as exc:  # OSError: a shared library that does not load
            raise LifeboatError(
                f"a status probe's driver does not load ({module}): {exc}",
                hint="the installation is broken: reinstall lifeboat",
            ) from exc


class ProbeChild:
    """The parent's side: ``ask`` sends a probe, ``done_asking`` says there are no more."""

    def __init__(self, pid: int, requests: IO[bytes], answers: IO[bytes]) -> None:
        self._pid = pid
        self._requests = requests
        self._futures: dict[str, Future[Any]] = {}
        self._reading = True  # until the reader has given up: no answer comes after that
        self._lock = threading.Lock()
        reading = threading.Thread(target=self._read_answers, args=(answers,), name="status probe child")
        reading.daemon = True
        reading.start()

    @classmethod
    def start(cls, prepare: Callable[[], None]) -> ProbeChild | None:
        """A child that runs ``prepare`` (its imports) and then waits for probes; None when
        this process cannot fork safely (another thread is running: a lock it held at the
        fork would stay held in the child for ever), or off Linux (no parent-death signal:
        a child asking a server that stalls would outlive status, holding its stdout)."""
        if sys.platform != "linux" or threading.active_count() != 1:
            return None
        parent = os.getpid()
        from_parent, to_child = _pipe()
        from_child, to_parent = _pipe()
        try:
            pid = os.fork()
        except OSError:  # a pids limit (EAGAIN): the probes are asked on threads instead
            for end in (from_parent, to_child, from_child, to_parent):
                end.close()
            return None
        if pid == 0:  # never returns
            to_child.close()
            from_child.close()
            _serve(prepare, from_parent, to_parent, parent)
        from_parent.close()
        to_parent.close()
        return cls(pid, to_child, from_child)

    def ask(self, name: str, ask: Callable[[], Any]) -> Future[Any] | None:
        """``ask()`` asked in the child; its answer completes the future (None when the child
        died without one). None: ``ask`` does not pickle, the caller asks it itself."""
        import pickle
        from concurrent.futures import Future

        try:
            payload = pickle.dumps((name, ask))
        except (pickle.PicklingError, TypeError, AttributeError):
            return None
        future: Future[Any] = Future()
        with self._lock:
            reading = self._reading
            if reading:
                self._futures[name] = future
        if not reading:  # the reader is done (the child is gone): this one would never be answered
            future.set_result(None)
            return future
        try:
            self._requests.write(_LENGTH.pack(len(payload)) + payload)
            self._requests.flush()
        except OSError:  # the child is gone: no answer
            self._complete(name, "answer", None)
        return future

    def done_asking(self) -> None:
        """No more probes: the child exits once it has answered those it has."""
        try:
            self._requests.close()
        except OSError:
            pass

    def _complete(self, name: str, outcome: str, value: Any) -> None:
        """The first word on a probe is its answer (the reader and a failed send may race)."""
        with self._lock:
            future = self._futures.get(name)
            if future is None or future.done():
                return
            if outcome == "raised":
                future.set_exception(ProbeRaised(value))
            elif outcome == "broken":
                message, hint, code = value
                future.set_exception(LifeboatError(message, hint, exit_code=code))
            else:
                future.set_result(value)

    def _read_answers(self, answers: IO[bytes]) -> None:
        try:
            with answers:
                for name, outcome, value in _received(answers):
                    self._complete(name, outcome, value)
        except Exception:  # an answer that does not unpickle: none from here on
            pass
        finally:  # whatever ended the reading, nothing waits on an answer that cannot come
            with self._lock:
                self._reading = False  # a probe asked from now on is answered None at once
                names = list(self._futures)
            for name in names:
                self._complete(name, "answer", None)
            try:
                os.waitpid(self._pid, 0)
            except ChildProcessError:  # reaped already (SIGCHLD ignored by whoever ran us)
                pass


def _pipe() -> tuple[IO[bytes], IO[bytes]]:
    """Its read end, its write end."""
    readable, writable = os.pipe()
    return os.fdopen(readable, "rb"), os.fdopen(writable, "wb")


def _received(pipe: IO[bytes]) -> Iterator[Any]:
    """The messages until the other end closes (a message cut short ends them too)."""
    import pickle

    while len(header := pipe.read(_LENGTH.size)) == _LENGTH.size:
        (length,) = _LENGTH.unpack(header)
        payload = pipe.read(length)
        if len(payload) != length:
            return
        yield pickle.loads(payload)


def _serve(prepare: Callable[[], None], requests: IO[bytes], answers: IO[bytes], parent: int) -> None:
    """The child's life: each probe on a thread of its own, so one server that does not
    answer holds up none of the others."""
    code = 0
    try:
        # Ctrl-C reaches the whole process group: the parent stops, and this child with it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with_parent(parent)
        gc.disable()  # a short life, its parent's: the collector would only walk the imports
        try:
            prepare()
        except LifeboatError as exc:  # a broken driver: every probe says so, as in-process
            for name, _ in _received(requests):
                _send_answer(answers, (name, "broken", (exc.message, exc.hint, exc.exit_code)))
            raise
        writing = threading.Lock()
        asking = []
        for name, ask in _received(requests):
            thread = threading.Thread(target=_answer, args=(name, ask, answers, writing), daemon=True)
            thread.start()
            asking.append(thread)
        for thread in asking:
            thread.join()
    except BaseException:  # no answer is what the parent then gets
        code = 1
    finally:
        os._exit(code)  # no atexit handlers, no flush of buffers copied from the parent


def _answer(name: str, ask: Callable[[], Any], answers: IO[bytes], writing: threading.Lock) -> None:
    import pickle

    try:
        payload = pickle.dumps((name, "answer", ask()))
    except LifeboatError as exc:  # one error line, as when asked in-process
        payload = pickle.dumps((name, "broken", (exc.message, exc.hint, exc.exit_code)))
    except BaseException as exc:  # raised by the probe, or an answer that does not pickle
        payload = pickle.dumps((name, "raised", f"{type(exc).__name__}: {exc}"))
    with writing:
        _send_payload(answers, payload)


def _send_answer(answers: IO[bytes], message: tuple[str, str, Any]) -> None:
    import pickle

    _send_payload(answers, pickle.dumps(message))


def _send_payload(pipe: IO[bytes], payload: bytes) -> None:
    try:
        pipe.write(_LENGTH.pack(len(payload)) + payload)
        pipe.flush()
    except OSError:
        pass  # the other end has gone


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent exits (where Linux's prctl is there); a parent already gone
    ends the child now."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(0)
