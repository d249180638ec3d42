"""The background WAL stager of a PostgreSQL restore: replay starts while the WAL is still
being fetched, as pgBackRest's asynchronous archive-get lets it.

The restore lays out a plan in the spool before anything is fetched: one marker per file
it will stage (``.pending/<name>``) and then ``.plan``. Workers fetch the files in replay
order (history files, then segments by number) into ``.tmp-<name>`` and rename them into
place before dropping the marker. The ``restore_command`` is a small shell script in the
spool (no interpreter start per segment), which for the file PostgreSQL asks for:

- links it when it is staged (exit 0);
- exits 1 at once when the plan has no marker for it: the archive lacks it, which
  PostgreSQL reads as the end of the archive (a history file probed for a timeline that
  does not exist, the segment after the last one);
- waits while it is pending and the restore holds its lock on ``.owner``;
- exits 200 when the stager failed (``.failed`` holds the reason), when the restore that
  owns the stager is gone (its lock is free: killed, even with SIGKILL) or the spool was
  removed. PostgreSQL treats an exit status above 125 as fatal and shuts down instead of
  ending recovery early: a restore that could not stage a segment never promotes a
  cluster that silently stops short of its target.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO

from lifeboat.assets.postgres.quoting import shell_arg
from lifeboat.assets.postgres.walnames import Segment, is_history
from lifeboat.errors import LifeboatError, RestoreError
from lifeboat.private import private_dir, private_opener, write_private
from lifeboat.repo import Repository

SCRIPT = ".restore-wal"
FATAL = 200  # > 125: PostgreSQL stops recovery with FATAL instead of promoting

# $1 = %f, $2 = %p. Marker checks come after the file check and the file check is repeated
# after the marker is seen gone: the stager renames the file in before it drops the marker.
RESTORE_SCRIPT = f"""\
#!/bin/sh
# written by lifeboat restore: waits for the background WAL stager (see lifeboat docs,
# docs/design/internals.md, "PostgreSQL restore")
s=${{0%/*}}
f=$1
p=$2
n=0
case $f in */*|.*|'') exit 1 ;; esac
while :; do
    if [ -f "$s/$f" ]; then
        # a copy that fails (a full disk) is no "not archived", which would end recovery
        ln -f "$s/$f" "$p" 2>/dev/null || cp "$s/$f" "$p" || {{ rm -f "$p"; exit {FATAL}; }}
        exit 0
    fi
    if [ ! -d "$s" ]; then
        echo "lifeboat: the WAL spool $s is gone: the restore that staged it has ended" >&2
        exit {FATAL}
    fi
    if [ -f "$s/.failed" ]; then
        echo "lifeboat: WAL staging failed: $(cat "$s/.failed")" >&2
        exit {FATAL}
    fi
    if [ ! -e "$s/.pending/$f" ]; then
        [ -f "$s/$f" ] && continue
        [ -f "$s/.plan" ] && exit 1
        echo "lifeboat: the WAL spool $s has no plan: the restore that staged it has ended" >&2
        exit {FATAL}
    fi
    # the owner's lock costs a process: looked at on the first pass and every 25th (0.5 s)
    if [ $((n % 25)) -eq 0 ] && flock -n "$s/.owner" true 2>/dev/null; then
        echo "lifeboat: the restore staging WAL file $f has stopped before staging it" >&2
        exit {FATAL}
    fi
    n=$((n + 1))
    sleep 0.02
done
"""


def restore_command(spool: Path) -> str:
    """The recovery setting's command: the spool's script, run by /bin/sh."""
    return "sh " + shell_arg(f"{spool}/{SCRIPT}") + " %f %p"


def replay_order(names: list[str]) -> list[str]:
    """History files first (PostgreSQL reads them before any segment), then segments in
    the order replay asks for them."""

    def key(name: str) -> tuple[int, int, int, str]:
        if is_history(name):
            return (0, 0, 0, name)
        seg = Segment.parse(name[:24])
        return (1, seg.number, seg.timeline, name) if seg else (2, 0, 0, name)

    return sorted(names, key=key)


class WalStager:
    """Fetches ``sources`` (spool file name -> (namespace, ref)) into ``spool`` in the
    background. ``start`` lays out the plan and returns; ``wait`` blocks until every file
    is staged (raising what stopped it); ``close`` stops the workers and joins them."""

    def __init__(
        self,
        repo: Repository,
        spool: Path,
        sources: dict[str, tuple[str, str]],
        user: str | None,
        workers: int | None = None,
    ) -> None:
        self.repo = repo
        self.spool = spool
        self.sources = sources
        self.order = replay_order(list(sources))
        self.workers = max(1, workers or repo.workers)
        self._ids = _ids(user)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._failure: BaseException | None = None
        self._lock: IO[bytes] | None = None
        self._lock_guard = threading.Lock()
        self._coordinator: threading.Thread | None = None
        self.started_at = 0.0
        self.seconds: float | None = None  # until the last file was staged

    # -- the plan --------------------------------------------------------------------

    def start(self) -> None:
        """Lay out the spool (pending markers, the owner lock, the restore_command script) and
        start the workers; returns at once."""
        private_dir(self.spool)
        pending = self.spool / ".pending"
        pending.mkdir(mode=0o700, exist_ok=True)
        self._lock = open(self.spool / ".owner", "wb", opener=private_opener)  # noqa: SIM115 (held until close)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        for name in self.order:
            (pending / name).touch(mode=0o600)
        script = self.spool / SCRIPT
        with open(script, "w", opener=private_opener) as fh:
            fh.write(RESTORE_SCRIPT)
        (self.spool / ".plan").write_text("\n".join(self.order) + "\n")
        for path in (self.spool, pending, self.spool / ".owner", script, self.spool / ".plan"):
            self._chown(path)
        for path in pending.iterdir():
            self._chown(path)
        self.started_at = time.monotonic()
        self._coordinator = threading.Thread(target=self._run, name="wal-stager", daemon=False)
        self._coordinator.start()

    def _chown(self, path: Path) -> None:
        if self._ids is not None:
            os.lchown(path, *self._ids)

    # -- the workers -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="wal-fetch") as pool:
                futures: list[Future[None]] = [pool.submit(self._fetch, name) for name in self.order]
                for future in futures:
                    exc = future.exception()
                    if exc is not None:
                        self._fail(exc)
                        break
                    if self._stop.is_set():
                        break
                if self._stop.is_set():
                    for future in futures:
                        future.cancel()
            if self._failure is None and not self._stop.is_set():
                self.seconds = round(time.monotonic() - self.started_at, 3)
        except BaseException as exc:  # recorded for wait(): a thread has no one to raise to
            self._fail(exc)
        finally:
            if self._failure is not None:
                self._release()  # a waiting restore_command gives up even if .failed could not be written
            self._done.set()

    def _fetch(self, name: str) -> None:
        if self._stop.is_set():
            return
        ns, ref = self.sources[name]
        tmp = self.spool / f".tmp-{name}"
        with open(tmp, "wb", opener=private_opener) as fh:
            for chunk in self.repo.iter_ref(self.repo.get_ref(ns, ref)):
                if self._stop.is_set():
                    break
                fh.write(chunk)
        if self._stop.is_set():
            tmp.unlink(missing_ok=True)
            return
        self._chown(tmp)
        os.replace(tmp, self.spool / name)
        (self.spool / ".pending" / name).unlink(missing_ok=True)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._stop.set()
        reason = exc.message if isinstance(exc, LifeboatError) else f"{type(exc).__name__}: {exc}"
        try:
            # in place at once: a restore_command that finds it reads the whole reason
            data = (reason.replace("\n", " ")[:500] + "\n").encode()
            write_private(self.spool / ".failed", data, owner=self._ids)
        except OSError:
            pass  # a full disk: the script also gives up when the owner's lock is free

    # -- the owner's side ------------------------------------------------------------

    @property
    def failure(self) -> BaseException | None:
        """What stopped the staging, if anything did."""
        return self._failure

    def _release(self) -> None:
        with self._lock_guard:
            if self._lock is not None:
                self._lock.close()  # releases the flock
                self._lock = None

    def elapsed(self) -> float:
        """Seconds of staging: until the last file, or until it was stopped."""
        if self.seconds is not None:
            return self.seconds
        return round(time.monotonic() - self.started_at, 3) if self.started_at else 0.0

    def is_complete(self) -> bool:
        """Whether every planned file is staged (not stopped, not failed)."""
        return self._done.is_set() and self._failure is None and self.seconds is not None

    def is_done(self) -> bool:
        """Whether every planned file is staged (or staging stopped)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> None:
        """Until every file is staged; raises what stopped the staging."""
        if not self._done.wait(timeout):
            raise RestoreError(f"WAL staging did not finish within {timeout:.0f}s")
        if self._failure is not None:
            raise self._failure
        if self._stop.is_set():
            raise RestoreError("WAL staging was stopped before it finished")

    def close(self, *, keep_spool: bool) -> None:
        """Stop the workers (a file being fetched is abandoned between chunks), join every
        thread and release the owner's lock. Without ``keep_spool`` the spool goes too:
        first ``.failed`` tells a waiting restore_command to give up, then the spool is
        removed by renaming it away (a script never sees half a spool)."""
        if not self._done.is_set() and not self._stop.is_set():
            self._fail(RestoreError("the restore stopped before the WAL was staged"))
        self._stop.set()
        if self._coordinator is not None:
            self._coordinator.join()
        self._release()
        if not keep_spool:
            remove_spool(self.spool)


def remove_spool(spool: Path) -> None:
    """Remove a spool, renamed aside first so a waiting restore_command never sees half of it."""
    if not spool.exists():
        return
    gone = spool.with_name(spool.name + f".removing-{os.getpid()}")
    try:
        os.replace(spool, gone)
    except OSError:
        gone = spool
    shutil.rmtree(gone, ignore_errors=True)


def spool_in_use(spool: Path) -> bool:
    """Whether a running restore holds the spool's owner lock (its replay still reads it),
    or the spool is another OS user's (not ours to judge, nor to remove)."""
    try:
        fd = os.open(spool / ".owner", os.O_RDONLY | os.O_NOFOLLOW)
    except PermissionError:
        return True
    except OSError:
        return False  # no spool, or no lock file in it: nobody's
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False  # released when the descriptor closes
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def remove_stale(spool: Path) -> None:
    """An earlier attempt's spool (and any half-removed one) is in no one's way: a restore
    killed mid-way left it; its owner lock is free, so no restore_command waits on it."""
    remove_spool(spool)
    for leftover in spool.parent.glob(f"{spool.name}.removing-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _ids(user: str | None) -> tuple[int, int] | None:
    if user is None:
        return None
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid
