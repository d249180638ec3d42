"""Local PostgreSQL clusters: find the binaries, run them as an unprivileged user, start/stop.

Used by restores (`--start`), drills and the sandbox, and by the tests.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lifeboat.assets.postgres.quoting import setting
from lifeboat.errors import ConfigError, RestoreError

# Paths pg_ctl may put on its shell command line as they are.
SHELL_SAFE = re.compile(r"^[A-Za-z0-9_./+,:@=-]+$")


def find_pg_bin(preferred: Path | None = None) -> Path:
    """The directory holding initdb/pg_ctl: the policy's pg_bin, PATH, or Debian's layout."""
    candidates = [preferred] if preferred else []
    which = shutil.which("pg_ctl")
    if which:
        candidates.append(Path(which).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for candidate in candidates:
        if candidate and (candidate / "pg_ctl").exists() and (candidate / "initdb").exists():
            return candidate
    raise ConfigError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found",
        hint="install Debian's postgresql package (make test does) or set pg_bin in the asset",
    )


def run_as_user() -> str | None:
    """PostgreSQL refuses to run as root: use the `postgres` system user then."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ConfigError("running as root needs a 'postgres' system user to run PostgreSQL") from None
    return "postgres"


def chown_tree(path: Path, user: str | None) -> None:
    """Give a directory tree to PostgreSQL's OS user (when running as root)."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.lchown(path, entry.pw_uid, entry.pw_gid)
    if path.is_symlink():  # a link planted in the staging: given away itself, never its target
        raise RestoreError(
            f"{path} is a symbolic link where lifeboat stages a cluster: "
            f"refusing to give its target to {user}",
            hint="remove it, and find out who could write to the state dir: lifeboat never makes one",
        )
    for root, dirs, files in os.walk(path):  # never into a linked directory (followlinks=False)
        os.chown(root, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _log_fd(log: Path) -> int:
    """The cluster's log for appending, never through a link planted at its name. An
    existing log (a restart's) is opened without O_CREAT: in a sticky directory such as
    /tmp, `fs.protected_regular` refuses even root an O_CREAT open of another user's file."""
    try:
        return os.open(log, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    except FileNotFoundError:
        return os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether something listens on the port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@dataclass
class PgCluster:
    """A cluster in ``datadir`` listening on ``port`` with its socket in ``socket_dir``."""

    datadir: Path
    port: int
    socket_dir: Path
    pg_bin: Path = field(default_factory=find_pg_bin)
    user: str | None = field(default_factory=run_as_user)

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.pg_bin / tool), *args]
        return ["runuser", "-u", self.user, "--", *cmd] if self.user else cmd

    def run(
        self, tool: str, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the cluster's OS user."""
        proc = subprocess.run(self._cmd(tool, *args), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RestoreError(f"{tool} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        return proc

    @property
    def dsn(self) -> str:
        """A connection string to the cluster over its socket directory."""
        from psycopg.conninfo import make_conninfo

        user = self.user or pwd.getpwuid(os.geteuid()).pw_name
        return make_conninfo(host=str(self.socket_dir), port=self.port, user=user, dbname="postgres")

    def initdb(self, *extra_conf: str) -> None:
        """Create a new cluster (tests, the sandbox)."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.datadir, 0o700)
        chown_tree(self.datadir, self.user)
        chown_tree(self.socket_dir, self.user)
        self.run("initdb", "-D", str(self.datadir), "-A", "trust", "-E", "UTF8", "--locale=C", "-k")
        self.configure(
            f"port = {self.port}",
            setting("unix_socket_directories", '"' + str(self.socket_dir).replace('"', '""') + '"'),
            "listen_addresses = ''",
            "fsync = on",
            *extra_conf,
        )

    def configure(self, *lines: str) -> None:
        """Append settings to postgresql.auto.conf."""
        with open(self.datadir / "postgresql.conf", "a") as fh:
            fh.write("\n" + "\n".join(lines) + "\n")

    def start(self, timeout: int = 120) -> None:
        """Start the cluster and wait until it accepts connections or recovery runs."""
        log = self.datadir.parent / f"{self.datadir.name}.log"
        try:
            os.close(_log_fd(log))
        except OSError as exc:
            raise RestoreError(f"cannot create the cluster's log {log}: {exc.strerror or exc}") from None
        chown_tree(log, self.user)
        if not all(SHELL_SAFE.match(str(p)) for p in (self.datadir, log, self.socket_dir)):
            self._spawn(log, timeout)
            return
        proc = self.run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(log),
            "-w",
            "-t",
            str(timeout),
            "-o",
            f"-p {self.port} -k {self.socket_dir}",
            "start",
            check=False,
            timeout=timeout + 30,
        )
        if proc.returncode != 0:
            raise RestoreError(f"PostgreSQL did not start on port {self.port}: {self._log_tail(log)}")

    def _spawn(self, log: Path, timeout: float) -> None:
        """Start the postmaster without a shell. `pg_ctl start` hands its paths to /bin/sh
        inside double quotes, where a '$(...)' in a directory name would run."""
        with open(_log_fd(log), "ab") as out:
            proc = subprocess.Popen(
                self._cmd(
                    "postgres", "-D", str(self.datadir), "-p", str(self.port), "-k", str(self.socket_dir)
                ),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        pidfile = self.datadir / "postmaster.pid"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RestoreError(f"PostgreSQL did not start on port {self.port}: {self._log_tail(log)}")
            try:
                lines = pidfile.read_text().splitlines()
            except OSError:
                lines = []
            if len(lines) >= 8 and lines[7].strip() in ("ready", "standby"):
                return
            time.sleep(0.1)
        raise RestoreError(f"PostgreSQL did not start on port {self.port} within {timeout:.0f}s")

    @staticmethod
    def _log_tail(log: Path) -> str:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
        return " | ".join(tail)

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster (mode: smart, fast or immediate)."""
        self.run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    @property
    def log_path(self) -> Path:
        """The server log of this cluster."""
        return self.datadir.parent / f"{self.datadir.name}.log"

    def wait_promoted(self, timeout: float = 600) -> None:
        """Wait until recovery has finished and the server accepts writes."""
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                    row = conn.execute("select pg_is_in_recovery()").fetchone()
                    if row is not None and not row[0]:
                        return
            except psycopg.OperationalError:
                if not self.is_running():
                    tail = self.log_path.read_text(errors="replace").strip().splitlines()[-4:]
                    raise RestoreError(f"PostgreSQL stopped during recovery: {' | '.join(tail)}") from None
            time.sleep(0.2)
        raise RestoreError(f"recovery did not finish within {timeout:.0f}s")

    def wait_accepting(self, timeout: float = 600) -> None:
        """Wait until the server accepts (read-only) queries: a standby stays in recovery."""
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute("select 1")
                    return
            except psycopg.OperationalError:
                if not self.is_running():
                    tail = self.log_path.read_text(errors="replace").strip().splitlines()[-4:]
                    raise RestoreError(f"PostgreSQL stopped during recovery: {' | '.join(tail)}") from None
            time.sleep(0.2)
        raise RestoreError(f"PostgreSQL did not accept connections within {timeout:.0f}s")

    def is_running(self) -> bool:
        """Whether the cluster's postmaster is running."""
        return self.run("pg_ctl", "-D", str(self.datadir), "status", check=False).returncode == 0
