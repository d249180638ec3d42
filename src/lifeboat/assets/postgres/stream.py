"""Continuous WAL streaming: ``pg_receivewal`` supervised, its output shipped to the repository.

archive_command ships whole segments, so with a quiet primary the newest writes can sit in
an unfinished segment for up to ``archive_timeout``. The streamer receives WAL as it is
written and, every ``flush_every``, stores the segment being written as a new version of
a *streamed partial*; completed segments are stored too. An RPO of seconds follows.

Streamed files live in their own namespace (``wal-stream/<asset>``), never in the archive:
the archive stays authoritative (archive_command's idempotency check is untouched), and a
restore uses streamed files only for what the archive lacks (see ``streamed_files``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from lifeboat.assets.postgres.cluster import find_pg_bin
from lifeboat.assets.postgres.walnames import Segment, is_history
from lifeboat.errors import LifeboatError
from lifeboat.private import private_dir
from lifeboat.repo import Repository

PARTIAL = ".partial"
Log = Callable[[str], None]


def stream_namespace(asset: str) -> str:
    """The ref namespace of an asset's streamed (not yet archived) WAL."""
    return f"wal-stream/{asset}"


def slot_name(asset: str) -> str:
    """The replication slot lifeboat streams through for an asset."""
    return "lifeboat_" + "".join(c if c.isalnum() else "_" for c in asset.lower())


def partial_version_name(segment: str, when_ms: int) -> str:
    """The ref name of one version of a partial WAL segment."""
    return f"{segment}{PARTIAL}.{when_ms:013d}"


def streamed_files(names: list[str]) -> dict[str, str]:
    """Wanted file name -> stream ref name: completed segments and history files as they
    are, plus, per segment with no completed copy, its newest partial version."""
    chosen: dict[str, str] = {}
    partials: dict[str, str] = {}
    for name in names:
        if Segment.parse(name) is not None or is_history(name):
            chosen[name] = name
        elif PARTIAL in name:
            segment = name.split(PARTIAL, 1)[0]
            if Segment.parse(segment) is not None and name > partials.get(segment, ""):
                partials[segment] = name
    for segment, ref in partials.items():
        chosen.setdefault(segment, ref)
    return chosen


def newest_stream_name(names: list[str]) -> str | None:
    """The ref name of the newest streamed partial (by the stamp in its name), if any."""
    stamped = [
        (int(stamp), n) for n in names if PARTIAL + "." in n and (stamp := n.rsplit(".", 1)[1]).isdigit()
    ]
    return max(stamped)[1] if stamped else None


@dataclass
class StreamStats:
    """Counters of one streaming session."""

    segments: int = 0
    partial_versions: int = 0
    restarts: int = 0
    last_flush: float | None = None


def split_password(dsn: str) -> tuple[str, str | None]:
    """(the DSN without its password, the password or None), for a key=value DSN or a
    postgresql:// URI alike."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return dsn, None  # not parseable here; pg_receivewal reports it without our help
    password = params.pop("password", None)
    if password is None:
        return dsn, None
    return make_conninfo("", **params), str(password)


class WalStreamer:
    """Runs pg_receivewal for one asset and ships what it writes; restarts it with
    backoff when it exits (server restart, network)."""

    def __init__(
        self,
        asset: str,
        dsn: str,
        directory: Path,
        open_repo: Callable[[], Repository],
        *,
        pg_bin: Path | None = None,
        flush_every: float = 1.0,
        log: Log = lambda _: None,
    ) -> None:
        self.asset = asset
        self.dsn = dsn
        self.directory = directory
        self.open_repo = open_repo
        self.receivewal = str(find_pg_bin(pg_bin) / "pg_receivewal")
        self.flush_every = flush_every
        self.log = log
        self.stats = StreamStats()
        self._shipped_partial: dict[str, str] = {}

    def _receivewal(self, *args: str) -> list[str]:
        dsn, _ = split_password(self.dsn)
        return [self.receivewal, "-d", dsn, "--slot", slot_name(self.asset), *args]

    def _env(self) -> dict[str, str]:
        """The child's environment: the password travels here, not on its command line,
        which every local user can read in ps and /proc/<pid>/cmdline."""
        _, password = split_password(self.dsn)
        env = dict(os.environ)
        if password is not None:
            env["PGPASSWORD"] = password
        return env

    def ensure_slot(self) -> None:
        """Create the replication slot if it is missing."""
        proc = subprocess.run(
            self._receivewal("--create-slot", "--if-not-exists"),
            capture_output=True,
            text=True,
            timeout=60,
            env=self._env(),
        )
        if proc.returncode != 0:
            raise LifeboatError(
                f"cannot create replication slot {slot_name(self.asset)}: {proc.stderr.strip()[:300]}",
                hint="the dsn's user needs the REPLICATION privilege and max_replication_slots > 0",
            )

    def start_receiver(self) -> subprocess.Popen[bytes]:
        """Start pg_receivewal into the spool directory."""
        private_dir(self.directory)
        return subprocess.Popen(
            self._receivewal("-D", str(self.directory), "--no-loop", "--status-interval", "1"),
            env=self._env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def run(self, stop: threading.Event) -> StreamStats:
        """Until ``stop`` is set: keep pg_receivewal running and ship its files."""
        self.ensure_slot()
        repo = self.open_repo()
        backoff = 1.0
        proc = self.start_receiver()
        try:
            while not stop.is_set():
                if proc.poll() is not None:
                    err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip()
                    self.log(
                        f"pg_receivewal for {self.asset} exited ({err[-200:]}); restarting in {backoff:.0f}s"
                    )
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 60)
                    self.stats.restarts += 1
                    proc = self.start_receiver()
                    continue
                self.ship(repo)
                backoff = 1.0
                stop.wait(self.flush_every)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            self.ship(repo)
        return self.stats

    def ship(self, repo: Repository) -> None:
        """Completed files: stored, then removed locally. The open segment: a new partial
        version when its content changed since the last one."""
        namespace = stream_namespace(self.asset)
        for entry in sorted(os.scandir(self.directory), key=lambda e: e.name):
            name = entry.name
            if Segment.parse(name) is not None or is_history(name):
                repo.put_ref(namespace, name, Path(entry.path).read_bytes(), labels={"kind": "streamed"})
                os.unlink(entry.path)
                self._shipped_partial.pop(name, None)
                self.stats.segments += 1
            elif name.endswith(PARTIAL):
                segment = name.removesuffix(PARTIAL)
                data = Path(entry.path).read_bytes()
                digest = hashlib.blake2b(data, digest_size=16).hexdigest()
                if self._shipped_partial.get(segment) == digest:
                    continue
                when_ms = int(time.time() * 1000)
                repo.put_ref(
                    namespace,
                    partial_version_name(segment, when_ms),
                    data,
                    labels={"kind": "streamed-partial"},
                )
                self._shipped_partial[segment] = digest
                self.stats.partial_versions += 1
                self.stats.last_flush = when_ms / 1000
