"""The server settings lifeboat needs, derived from the policy (archive_timeout from RPO)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psycopg import sql

from lifeboat.assets.postgres.backup import connect
from lifeboat.assets.postgres.quoting import shell_arg

RESTART_SETTINGS = {"archive_mode", "wal_level"}


def archive_command(python: str, config: Path, asset: str) -> str:
    """`lifeboat wal push` as PostgreSQL's archive_command: every word shell-quoted."""
    words = [python, "-m", "lifeboat", "--config", str(config), "wal", "push", "--asset", asset]
    return " ".join(shell_arg(w) for w in words) + " %p"


def required_settings(policy: Any, asset: Any, python: str, config: Path) -> dict[str, str]:
    rpo = policy.classes[asset.class_].rpo.total_seconds()
    timeout = max(10, min(int(rpo / 2), 3600))  # a segment is shipped at least twice per RPO
    return {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": archive_command(python, config, asset.name),
        "archive_timeout": f"{timeout}s",
    }


def current_settings(dsn: str, names: list[str]) -> dict[str, str]:
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


def server_findings(policy: Any, asset: Any) -> list[str]:
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
