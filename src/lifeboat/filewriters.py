"""A process beside a restore that creates its small files.

A restore of many small files is one Python thread doing six system calls a file (create,
write, chown, chmod, utime, close) between reads of verified chunks: it kept one core
busy, and a second thread made it slower (each call hands the GIL back and forth). So the
restore process reads, verifies and plans, and sends each batch of small files (bytes and
metadata) to a writer process over a pipe, which makes them on the other core. Several
writers can take the batches in turn (``FileWriters``); one does (``WRITERS``).

A `dir://` objects restore sends its small objects the same way
(assets/objects/dirbatches.py), with the mode ``PLAIN``: made as the restore itself makes
an object's file, 0644 less the umask, no metadata applied.

The writer is only used for a fresh target (empty when the restore began, so what it
creates needs no record: a failed restore empties the target again). It opens each
parent directory from the target's descriptor, one component at a time, never following
a link, and creates each file exclusively under its name, never through a link: what it
finds there (planted during the restore), or a parent that is no longer a directory, it
leaves, and names the file in its reply, for the restore to write the usual way. Given a
keys restore's ``read_back``, it reads each file it made back, once its name is looked up
anew and found to lead to that file, names one that does not hold exactly what it was sent
the same way, and replies with the indexes of those that do: the restore fingerprints
those from the bytes it sent (equal to what was read back), on its reply thread, which
mostly waits. The writer never holds the fingerprint key: it once fingerprinted here, when
the restore process was the slower half; now the writer is (creating a file is most of its
time), and the fingerprints were 0.1 s of its 1.3 s in a restore of 30,000 key files. It
stops at the first error and replies with it. It is started with ``-P`` from ``/``: nothing in
the current directory can shadow a module it imports.

Messages are ``marshal``-framed tuples of strings, bytes and integers between two
processes of one restore: no pickle, and nothing else reads the pipe.
"""

from __future__ import annotations

import fcntl
import marshal
import os
import queue
import resource
import signal
import stat
import subprocess
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import IO, NoReturn

from lifeboat.targetdir import DIR_FLAGS, TEMP_FLAGS, TargetDir, apply_file_metadata, write_all

# a file a keys restore makes and reads back through the same descriptor (see _holds)
MADE_FLAGS = (TEMP_FLAGS & ~os.O_WRONLY) | os.O_RDWR
HELD_DIRS = 64  # parent directories a writer keeps open (a batch is mostly one directory)
IN_FLIGHT = 4  # batches sent to the writer and not yet answered
SEND_FILES = 512  # files one batch carries ...
SEND_BYTES = 4 << 20  # ... and their bytes at most (four in flight, one being built)
PIPE_BYTES = 1 << 20  # the pipe to a writer (Linux lets any user have 1 MiB: pipe-max-size)
WRITER_FROM = 512  # small files in a restore's planned batch from which it starts a writer
# Writer processes at most. One: the restore process, reading and verifying under the GIL,
# is what limits a restore of small files, and a second writer only made the kernel work
# harder, two processes creating files in one directory (at d47797e, 100,000 objects of a
# dir:// restore to disk: 3.7 s with one against 4.4 s with two, to tmpfs 2.3 against 2.5
# s; a million files of a files restore into tmpfs: 26.0 against 26.0-30.8 s; keys and
# files restores of 100,000 to disk: the same). Two, when a faster restore process needs
# them: the batches then go to each in turn (``FileWriters``).
WRITERS = 1
# small files in a planned batch from which a second writer starts (when WRITERS allows
# one): more than one writer's batches in flight hold
SECOND_WRITER_FROM = IN_FLIGHT * SEND_FILES
READY = b"ready"  # the writer's first message: it started and imported what it needs

# (parent directory, name, content, mode, uid or -1, gid or -1, mtime in ns); a mode of
# PLAIN makes a file as an object restore does: 0o644 less the umask, no metadata applied
FileSpec = tuple[str, str, bytes, int, int, int, int]
PLAIN = -1
# (batch number, files written, indexes of the files found already there, error or None,
# indexes of the files read back equal), the error as (errno, strerror, path)
Reply = tuple[int, int, list[int], tuple[int, str, str] | None, list[int]]
# a batch's reply handed on: (files written, indexes found already there, indexes read back)
Done = Callable[[int, list[int], list[int]], None]


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(8, "little") + payload


def _read_frame(stream: IO[bytes]) -> bytes | None:
    """One message, or None at the end of the stream (a short one is an end too)."""
    header = stream.read(8)
    if len(header) < 8:
        return None
    size = int.from_bytes(header, "little")
    payload = stream.read(size)
    return payload if len(payload) == size else None


# -- the writer process ------------------------------------------------------------------


DirIdentity = tuple[int, int]  # (st_dev, st_ino)


def identity_of(fd: int) -> DirIdentity:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


class _Directories:
    """Parent directories opened from the target's descriptor, component by component,
    without following links; the last ``HELD_DIRS`` kept open."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.held: OrderedDict[str, int] = OrderedDict()
        self._identities: dict[int, DirIdentity] = {}  # of the descriptors held (and the root's)

    def get(self, rel: str) -> int:
        if rel == "":
            return self.root_fd
        fd = self.held.get(rel)
        if fd is not None:
            self.held.move_to_end(rel)
            return fd
        fd = self._open(rel)
        self.held[rel] = fd
        while len(self.held) > HELD_DIRS:
            self._close(self.held.popitem(last=False)[1])
        return fd

    def identity(self, fd: int) -> DirIdentity:
        """The identity of a descriptor ``get`` returned, taken once while it is held (a
        read-back restore asked it for every file: a fifth of its system calls)."""
        found = self._identities.get(fd)
        if found is None:
            found = self._identities[fd] = identity_of(fd)
        return found

    def _close(self, fd: int) -> None:
        self._identities.pop(fd, None)
        os.close(fd)

    def _open(self, rel: str) -> int:
        parts = rel.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise OSError(22, "not a relative path inside the target", rel)
        fd = self.root_fd
        try:
            for part in parts:
                opened = os.open(part, DIR_FLAGS, dir_fd=fd)
                if fd != self.root_fd:
                    os.close(fd)
                fd = opened
        except OSError:
            if fd != self.root_fd:  # the parents opened on the way: not kept, not leaked
                os.close(fd)
            raise
        return fd

    def still(self, rel: str, identity: DirIdentity) -> bool:
        """Whether ``rel``, opened anew from the target, is still the directory ``identity``
        names (the one files were made through: not moved away and replaced since)."""
        if rel == "":
            return True
        try:
            fd = self._open(rel)
        except OSError:
            return False
        try:
            return identity_of(fd) == identity
        finally:
            os.close(fd)

    def forget(self, rel: str) -> None:
        """Drops what is held of ``rel`` and below (it was replaced or removed)."""
        for held in [h for h in self.held if h == rel or h.startswith(rel + "/")]:
            self._close(self.held.pop(held))


def _write_file(dir_fd: int, spec: FileSpec, read_back: bool = False) -> bool:
    """Creates one file; False when something is already there (left as it is), or, with
    ``read_back``, when it does not read back as exactly what was written."""
    _, name, data, mode, uid, gid, mtime_ns = spec
    if name in ("", ".", "..") or "/" in name:
        raise OSError(22, "not a file name", name)
    flags = MADE_FLAGS if read_back else TEMP_FLAGS
    try:
        fd = os.open(name, flags, 0o644 if mode == PLAIN else mode & 0o700, dir_fd=dir_fd)
    except FileExistsError:
        return False
    try:
        try:
            if not read_back:
                write_all(fd, data)
                if mode != PLAIN:
                    apply_file_metadata(fd, mode, uid, gid, mtime_ns)
                return True
            made = os.fstat(fd)
            write_all(fd, data)
            if mode != PLAIN:
                _apply_needed_metadata(fd, made, mode, uid, gid, mtime_ns)
            return _holds(dir_fd, name, fd, made, data)
        finally:
            os.close(fd)
    except BaseException:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def _apply_needed_metadata(
    fd: int, made: os.stat_result, mode: int, uid: int, gid: int, mtime_ns: int
) -> None:
    """``apply_file_metadata`` without the calls that would change nothing, for a file read
    back (whose stat is taken anyway): made with the owner bits of ``mode`` (never more
    open than that before its owner is set), a key file (0600) already has its mode, and
    one restored by its owner already has its owner. Of a keys restore's twelve system
    calls a file, two. A plain restore applies all three: the stat would cost one more."""
    owned = uid < 0 or (made.st_uid, made.st_gid) == (uid, gid)
    if not owned:
        try:  # before the chmod: a chown clears setuid/setgid
            os.fchown(fd, uid, gid)
        except OSError:
            pass  # the user may not exist on this host; contents matter more
    if not owned or stat.S_IMODE(made.st_mode) != mode:
        os.fchmod(fd, mode)
    os.utime(fd, ns=(mtime_ns, mtime_ns))


def _holds(dir_fd: int, name: str, fd: int, made: os.stat_result, data: bytes) -> bool:
    """Whether ``name`` still names the file made through ``fd`` (not moved away and
    replaced: looked up anew, never through a link), of the size of ``data``, and that
    file reads back as exactly ``data`` (read to one byte past it: grown since the lookup,
    it does not). One it cannot read is not confirmed. Read through the descriptor that
    made it, not a new one: the name's lookup says it is the same file, and an open, a
    stat and a read a file fewer were a sixth of a keys restore's writer."""
    try:
        named = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        found = os.pread(fd, len(data) + 1, 0)
        while len(found) < len(data) and (more := os.pread(fd, len(data) + 1 - len(found), len(found))):
            found += more
    except OSError:
        return False
    same_file = (named.st_dev, named.st_ino) == (made.st_dev, made.st_ino)
    return same_file and named.st_size == len(data) and found == data


def _write_batch(dirs: _Directories, number: int, files: list[FileSpec], read_back: bool = False) -> Reply:
    """Makes a batch's files; with ``read_back``, reads each back and names, by index, the
    ones that hold exactly what was sent."""
    written, existing = 0, []
    # read back, by the directory each was made through: a parent put down (more than
    # HELD_DIRS since) and opened again may be another directory under the same name
    confirmed: dict[tuple[str, DirIdentity], list[int]] = {}
    for k, spec in enumerate(files):
        try:
            dir_fd = dirs.get(spec[0])
        except OSError:  # gone, or no longer a directory: the restore's own way decides
            dirs.forget(spec[0])
            existing.append(k)
            continue
        try:
            if _write_file(dir_fd, spec, read_back):
                written += 1
                if read_back:
                    confirmed.setdefault((spec[0], dirs.identity(dir_fd)), []).append(k)
            else:
                existing.append(k)
        except (OSError, ValueError, OverflowError) as exc:  # a NUL in a name, a uid past 2**32
            errno = exc.errno if isinstance(exc, OSError) and exc.errno else 22
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            where = f"{spec[0]}/{spec[1]}" if spec[0] else spec[1]
            return number, written, existing, (errno, reason, where), []
    # a file made through a directory moved away since is not where its path leads
    held: list[int] = []
    for (rel, identity), made in confirmed.items():
        if dirs.still(rel, identity):
            held += made
        else:
            dirs.forget(rel)
            written -= len(made)
            existing += made
    return number, written, existing, None, sorted(held)


def _read_ahead(requests: IO[bytes]) -> Iterator[bytes]:
    """The batches sent, read off the pipe by a thread of their own as they come. A batch is
    a megabyte or more, more than the pipe holds: read only once the one before was
    written, its sender waited for that, without reading or checking the next (a keys
    restore of 30,000 files: half of that thread's time, with the default 64 KiB pipe)."""
    frames: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()  # the sender keeps IN_FLIGHT

    def read() -> None:
        try:
            while (payload := _read_frame(requests)) is not None:
                frames.put(payload)
        finally:
            frames.put(None)  # the end, or the pipe's error: the batches before it are written

    threading.Thread(target=read, name="requests", daemon=True).start()
    while (payload := frames.get()) is not None:
        yield payload


def serve(root_fd: int, requests: IO[bytes], replies: IO[bytes]) -> None:
    """Says it is ready, then writes batches until the end of ``requests`` or the first error."""
    dirs = _Directories(root_fd)
    replies.write(_frame(READY))
    replies.flush()
    for payload in _read_ahead(requests):
        number, files, read_back = marshal.loads(payload)
        reply = _write_batch(dirs, number, files, read_back)
        replies.write(_frame(marshal.dumps(reply)))
        replies.flush()
        if reply[3] is not None:
            return


# -- the restore's side ------------------------------------------------------------------


def _widen(pipe: IO[bytes] | None) -> None:
    """A pipe that holds a whole batch, or as much as the system lets this user have: each
    64 KB of a batch sent through the default pipe was a hand-over between two processes."""
    if pipe is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # above the system's limit for this user: the default pipe will do
        pass


@dataclass
class _Sent:
    done: Done
    failed: threading.Event  # set when the writer fails before answering


class FileWriter:
    """A writer process for the target whose descriptor is ``root_fd``. ``send`` a batch;
    its ``done`` runs on this object's reply thread once the batch is written. The first
    error (the writer's, the pipe's, or one ``done`` raised) is kept in ``error``, sets
    the ``failed`` event of every batch left unanswered and ends the writer; ``drain``
    waits for every reply and raises it."""

    def __init__(self, root_fd: int) -> None:
        """Starts the writer process (OSError when it cannot); ``ready`` waits for it."""
        self._child = subprocess.Popen(
            [sys.executable, "-P", "-m", "lifeboat.filewriters", str(root_fd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # a crash is reported as one line, by the restore
            pass_fds=(root_fd,),
            cwd="/",
        )
        _widen(self._child.stdin)
        self._window = threading.Semaphore(IN_FLIGHT)
        self._lock = threading.Lock()
        self._sent: dict[int, _Sent] = {}
        self._next = 0
        self._closing = False
        self.error: BaseException | None = None
        self._replies: threading.Thread | None = None

    def ready(self) -> None:
        """Waits until the writer has started and imported what it needs, before the first
        ``send`` (OSError when it could not: it is then ended). Its start (~40 ms) overlaps
        whatever the restore does between starting it and this call."""
        if self._replies is not None:
            return
        try:
            assert self._child.stdout is not None
            if _read_frame(self._child.stdout) != READY:
                raise OSError(32, "the file writer did not start")
            self._replies = threading.Thread(target=self._read_replies, name="file-writer", daemon=True)
            self._replies.start()
        except BaseException:
            self.close(kill=True)
            raise

    def send(
        self,
        specs: list[FileSpec],
        done: Done,
        failed: threading.Event,
        *,
        read_back: bool = False,
    ) -> None:
        """Hands a batch to the writer (waits while ``IN_FLIGHT`` are unanswered); with
        ``read_back``, each file it makes is read back, named with those found already there
        unless it holds exactly what was sent, and among those read back if it does."""
        self.ready()  # nothing to wait for once it is
        self._window.acquire()
        with self._lock:
            if self.error is not None:
                self._window.release()
                raise self.error
            number, self._next = self._next, self._next + 1
            self._sent[number] = _Sent(done, failed)
        stdin = self._child.stdin
        assert stdin is not None
        payload = marshal.dumps((number, specs, read_back))
        try:
            stdin.write(len(payload).to_bytes(8, "little"))  # not joined: a batch is megabytes
            stdin.write(payload)
            stdin.flush()
        except OSError:  # the writer ended: its reply says why, or it died
            if self._replies is not None:
                self._replies.join()
            raise self.error or OSError(32, "the file writer ended") from None

    def drain(self) -> None:
        """Waits for every reply; raises the first error."""
        for _ in range(IN_FLIGHT):
            self._window.acquire()
        for _ in range(IN_FLIGHT):
            self._window.release()
        if self.error is not None:
            raise self.error

    def close(self, kill: bool = False) -> None:
        """Ends the writer (at once with ``kill``) and waits for it: none outlives the
        restore, even when the wait itself is interrupted."""
        with self._lock:
            self._closing = True
        if kill:
            self._child.kill()
        try:
            try:
                if self._child.stdin is not None:
                    self._child.stdin.close()
            except OSError:
                pass
            self._child.wait()
        except BaseException:  # Ctrl-C during the wait
            self._child.kill()
            self._child.wait()
            raise
        finally:
            if self._replies is not None:
                self._replies.join()
            if self._child.stdout is not None:
                self._child.stdout.close()

    def _read_replies(self) -> None:
        try:
            while self._read_reply():
                pass
        except BaseException as exc:  # a garbled reply: fail everything waiting, never hang
            self._fail(exc)

    def _read_reply(self) -> bool:
        """Handles one reply; False once the writer is done or failed."""
        stdout = self._child.stdout
        assert stdout is not None
        payload = _read_frame(stdout)
        if payload is None:
            with self._lock:
                expected = self._closing and not self._sent
            if not expected:
                self._fail(OSError(32, "the file writer ended"))
            return False
        number, written, existing, error, held = marshal.loads(payload)
        with self._lock:
            sent = self._sent.pop(number)
        failure: BaseException | None = None
        try:
            sent.done(written, existing, held)
        except BaseException as exc:
            failure = exc
        if error is not None:  # the writer's own error first: it is why the batch stopped
            failure = OSError(error[0], error[1], error[2])
        if failure is not None:
            sent.failed.set()
            self._fail(failure)
        self._window.release()
        return failure is None

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = error
            for sent in self._sent.values():  # never to be answered: free their places
                sent.failed.set()
                self._window.release()
            self._sent.clear()


class FileWriters:
    """The restore's writer processes, each batch handed to the next in turn; as one
    ``FileWriter`` to the restore (sends come from one thread).

    A second writer once made a million small files into tmpfs in 40.6 s instead of 49.6
    s; since the restore process got faster, one is enough (``WRITERS``). Each writer opens
    its own parent directories and makes only what it is sent, so two never write the same
    file. Replies come on each writer's own thread: a batch's ``done`` may run beside
    another's."""

    def __init__(self, writers: list[FileWriter]) -> None:
        """Writers that are ready (at least one)."""
        self._writers = writers
        self._turn = 0

    def add(self, writer: FileWriter) -> None:
        """One more writer, ready; sent batches in turn from the next ``send`` on."""
        self._writers.append(writer)

    @property
    def count(self) -> int:
        return len(self._writers)

    def send(
        self,
        specs: list[FileSpec],
        done: Done,
        failed: threading.Event,
        *,
        read_back: bool = False,
    ) -> None:
        """``FileWriter.send`` to the writer whose turn it is. When that one has failed, the
        others' batches are answered first, then its error is raised: a caller that then
        writes the unanswered files itself (a `dir://` restore) never races a writer still
        making them."""
        writer = self._writers[self._turn % len(self._writers)]
        self._turn += 1
        try:
            writer.send(specs, done, failed, read_back=read_back)
        except Exception:
            self._answered_except(writer)
            raise

    def drain(self) -> None:
        """Waits for every writer's replies; raises the first error."""
        errors = []
        for writer in self._writers:
            try:
                writer.drain()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _answered_except(self, failed: FileWriter) -> None:
        for writer in self._writers:
            if writer is not failed:
                try:
                    writer.drain()
                except Exception:
                    pass  # the error being raised is the first one's

    def close(self, kill: bool = False) -> None:
        """Ends every writer, each even when ending another was interrupted."""
        with ExitStack() as stack:
            for writer in self._writers:
                stack.callback(writer.close, kill)


class WriterSlot:
    """The restore's writer processes for small files, kept from the first batch that uses
    them to the end. A process takes ~40 ms to start, the restore waiting: a restore that
    ``expects`` enough small files (the snapshot's totals say so) starts them at once, and
    they start while it reads the tree; another starts them with the first batch that has
    enough small files (each writer beside the others)."""

    def __init__(self, tree: TargetDir) -> None:
        self.tree = tree
        self._writers: FileWriters | None = None
        self._starting: list[FileWriter] = []  # started, not yet ready
        self._failed = False
        self._lock = threading.Lock()

    def expect(self, small_files: int) -> None:
        """Starts the writers for that many small files now, without waiting for them."""
        if small_files >= WRITER_FROM:
            with self._lock:
                self._start(_wanted(small_files))

    def get(self, small_files: int = 0) -> FileWriters | None:
        """The writers for a planned batch of ``small_files`` (None when none could start:
        the files are then written here): those ``expect`` started, else one, and a second
        once a batch has ``SECOND_WRITER_FROM``. Called between batches, never while one is
        being sent."""
        with self._lock:
            if self._failed:
                return None
            held = (self._writers.count if self._writers is not None else 0) + len(self._starting)
            self._start(_wanted(small_files) - held)
            self._take_ready()
            if self._writers is None:  # not even one: this restore writes its files itself
                self._failed = True
            return self._writers

    def close(self, kill: bool) -> None:
        with self._lock, ExitStack() as stack:
            for writer in self._starting:  # sent nothing: nothing to wait for
                stack.callback(writer.close, True)
            if self._writers is not None:
                stack.callback(self._writers.close, kill)

    def _start(self, count: int) -> None:
        for _ in range(count):
            try:
                self._starting.append(FileWriter(self.tree.root_fd))
            except OSError:  # no process to be had: the ones started go on
                return

    def _take_ready(self) -> None:
        """Each writer started, once it is ready, joins the others (one that fails to start
        is ended). A writer leaves ``_starting`` only once it is among them: ``close``
        reaches it whatever interrupts this."""
        while self._starting:
            writer = self._starting[0]
            try:
                writer.ready()
            except OSError:
                del self._starting[0]
                continue
            if self._writers is None:
                self._writers = FileWriters([writer])
            else:
                self._writers.add(writer)
            del self._starting[0]


def _wanted(small_files: int) -> int:
    """Writers for that many small files: one, a second from ``SECOND_WRITER_FROM``."""
    return WRITERS if small_files >= SECOND_WRITER_FROM else 1


@contextmanager
def small_file_writer(tree: TargetDir, expected: int = 0) -> Iterator[WriterSlot | None]:
    """A writer process slot for a fresh target on a machine with a core to spare; the
    process is ended (killed on any failure) before the restore cleans up after itself.
    ``expected``: small files the restore expects to write (see WriterSlot)."""
    if not tree.fresh or (os.cpu_count() or 1) < 2 or not sys.executable:
        yield None
        return
    slot = WriterSlot(tree)
    failed = True
    try:
        slot.expect(expected)
        yield slot
        failed = False
    finally:
        slot.close(kill=failed)  # before a take_back: nothing may be created behind it


def main(root_fd: int) -> NoReturn:
    """The writer's whole life. It holds verified file bytes (key material, in a keys
    restore): it never dumps core. It ends with ``os._exit``: after an error reply the
    read-ahead thread is still blocked reading the pipe, and an interpreter shutting down
    beside it aborts (a core dump where the limit allows one, a second's wait)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Ctrl-C reaches the whole process group: the restore stops this writer itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    status = 1
    try:
        serve(root_fd, sys.stdin.buffer, sys.stdout.buffer)
        status = 0
    finally:  # an exception here has no one to read it (stderr is closed): the status says it
        try:
            sys.stdout.flush()
        except OSError:  # the restore is gone
            status = 1
        os._exit(status)


if __name__ == "__main__":
    main(int(sys.argv[1]))
