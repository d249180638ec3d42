"""The server settings lifeboat needs, derived from the policy (archive_timeout from RPO)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from lifeboat.assets.postgres.connection import PgError, connect, first_line
from lifeboat.assets.postgres.quoting import shell_arg
from lifeboat.escaped_text import child_error

if TYPE_CHECKING:
    from lifeboat.assets.postgres.model import PostgresAsset
    from lifeboat.policy import Policy
    from lifeboat.repo import Repository

RESTART_SETTINGS = {"archive_mode", "wal_level"}


def archive_command(python: str, config: Path, asset: str) -> str:
    """`lifeboat wal push` as PostgreSQL's archive_command: every word shell-quoted."""
    words = [python, "-m", "lifeboat", "--config", str(config), "wal", "push", "--asset", asset]
    return " ".join(shell_arg(w) for w in words) + " %p"


def required_settings(policy: Policy, asset: PostgresAsset, python: str, config: Path) -> dict[str, str]:
    """archive_mode, archive_command, archive_timeout and wal_level the asset needs."""
    rpo = policy.classes[asset.class_].rpo.total_seconds()
    timeout = max(10, min(int(rpo / 2), 3600))  # a segment is shipped at least twice per RPO
    return {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": archive_command(python, config, asset.name),
        "archive_timeout": f"{timeout}s",
    }


def current_settings(dsn: str, names: list[str]) -> dict[str, str]:
    """The server's current values of the archive settings."""
    with connect(dsn) as conn:
        rows = conn.execute(
            "select name, setting, unit from pg_settings where name = any(%s)", (names,)
        ).fetchall()
    return {name: f"{setting}{'s' if unit == 's' else ''}" for name, setting, unit in rows}


def apply_settings(dsn: str, settings: dict[str, str]) -> list[str]:
    """ALTER SYSTEM + reload; returns the settings that only take effect after a restart."""
    before = current_settings(dsn, list(settings))
    with connect(dsn) as conn:
        for key, value in settings.items():
            # ALTER SYSTEM takes no bind parameters: psycopg quotes the literal client-side.
            conn.execute(sql.SQL("alter system set {} = {}").format(sql.Identifier(key), sql.Literal(value)))
        conn.execute("select pg_reload_conf()")
    return [k for k in RESTART_SETTINGS if before.get(k) != settings[k]]


def server_findings(policy: Policy, asset: PostgresAsset) -> list[str]:
    """What the running server's settings mean for the asset's RPO (empty: all good)."""
    from lifeboat.errors import LifeboatError

    try:
        current = current_settings(
            asset.dsn, ["archive_mode", "archive_command", "archive_timeout", "wal_level"]
        )
    except LifeboatError as exc:
        return [f"server not reachable, settings not checked ({exc.message})"]
    rpo = policy.classes[asset.class_].rpo.total_seconds()
    problems = []
    if current.get("archive_mode") not in ("on", "always"):
        problems.append("archive_mode is off: WAL is not archived, only base backups protect this database")
    if "lifeboat" not in current.get("archive_command", ""):
        problems.append("archive_command does not call lifeboat (see 'lifeboat pg configure')")
    timeout = int(current.get("archive_timeout", "0s").rstrip("s") or 0)
    if timeout == 0 or timeout > rpo:
        problems.append(f"archive_timeout {timeout}s cannot meet the RPO of {rpo:.0f}s on a quiet server")
    if current.get("wal_level") == "minimal":
        problems.append("wal_level is minimal: point-in-time recovery is impossible")
    return problems


PROBE_NAMESPACE = "probe"  # not wal/: retention, restores and `wal verify` never see it


def server_user(asset: PostgresAsset) -> str | None:
    """The OS user PostgreSQL (and so archive_command) runs as: the owner of the local
    PGDATA; None when the data directory is not on this machine."""
    import pwd

    try:
        uid = Path(asset.pgdata).stat().st_uid if asset.pgdata is not None else None
    except OSError:
        return None
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def write_probe(repo: Repository, asset: str) -> str:
    """What `wal push` does, as the user running this: every repository directory a push
    may write into is writable, and one ref goes through the push path (a pack into a
    data/ prefix, an index, the ref). Returns the probe's name."""
    import getpass
    import time as _time

    from lifeboat.errors import LifeboatError, StorageError

    root = getattr(repo.storage, "root", None)
    user = getpass.getuser()
    if root is not None:
        closed = [
            dirpath
            for dirpath, _, _ in os.walk(root)
            if not os.access(dirpath, os.W_OK | os.X_OK) and ".lifeboat-tmp-" not in dirpath
        ]
        if closed:
            raise StorageError(
                f"{len(closed)} repository director{'y is' if len(closed) == 1 else 'ies are'} "
                f"not writable by {user} (first: {closed[0]}): its WAL pushes will fail",
                hint=f"chown -R {user} {root} && find {root} -type d -exec chmod 2770 {{}} +"
                " (then root-run commands keep that owner)",
            )
    name = f"{user}-{_time.time_ns()}"
    repo.put_ref(f"{PROBE_NAMESPACE}/{asset}", name, f"lifeboat write probe {name}\n".encode())
    try:
        repo.delete_ref(f"{PROBE_NAMESPACE}/{asset}", name)  # its chunk goes at the next prune
    except LifeboatError:
        pass  # under Object Lock: a few bytes kept until the lock ends
    return name


def probe_as_server_user(config: Path, asset: PostgresAsset) -> tuple[str, str | None]:
    """Run `lifeboat wal probe` as PostgreSQL's OS user (runuser when we are root).
    Returns (user, None) on success or (user, the one-line error)."""
    import getpass
    import subprocess
    import sys

    user = server_user(asset)
    cmd = [
        sys.executable,
        "-P",
        "-m",
        "lifeboat",
        "--config",
        str(config),
        "wal",
        "probe",
        "--asset",
        asset.name,
    ]
    if os.geteuid() == 0 and user not in (None, "root"):
        cmd = ["runuser", "-u", str(user), "--", *cmd]
    else:
        user = getpass.getuser()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=config.parent)
    except subprocess.TimeoutExpired:
        return str(user), "the write probe did not finish within 300 s"
    if proc.returncode == 0:
        return str(user), None
    # not lifeboat's error when it failed before lifeboat ran (runuser refused the user)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return str(user), child_error(proc.stderr) or (lines[-1] if lines else f"exit {proc.returncode}")


def archive_failure(dsn: str) -> str | None:
    """pg_stat_archiver's verdict: a message when archive_command failed after its last
    success (or never succeeded), None when archiving is healthy or the server is out of
    reach (reachability is reported elsewhere). PgError when the server refuses the query
    (a role without pg_stat_archiver) or drops the connection after connecting."""
    from lifeboat.errors import LifeboatError

    try:
        conn = connect(dsn)
    except LifeboatError:
        return None
    return archive_failure_on(conn)


def archive_failure_on(conn: psycopg.Connection[Any]) -> str | None:
    """``archive_failure`` of a server already connected to (the connection is closed)."""
    try:
        with conn:
            row = conn.execute(
                "select failed_count, last_failed_wal, last_failed_time, last_archived_wal,"
                " last_archived_time from pg_stat_archiver"
            ).fetchone()
    except psycopg.Error as exc:
        raise PgError(
            f"cannot read pg_stat_archiver: {first_line(exc)}",
            hint="let the dsn's role read it (pg_monitor), or check the server",
        ) from None
    if row is None:
        return None
    failed, failed_wal, failed_at, archived_wal, archived_at = row
    if not failed or failed_at is None or (archived_at is not None and archived_at >= failed_at):
        return None
    since = (
        f"last success {archived_wal} at {archived_at.isoformat(timespec='seconds')}"
        if archived_at is not None
        else "never archived successfully"
    )
    return (
        f"archive_command is failing: {failed_wal} failed at {failed_at.isoformat(timespec='seconds')}"
        f" ({failed} failures since the server started; {since})"
    )
