"""Quoting for the two places lifeboat writes values PostgreSQL later interprets: shell
commands (restore_command, archive_command, run by /bin/sh after PostgreSQL replaced its
%-escapes) and configuration files (postgresql.auto.conf string values)."""

from __future__ import annotations

import re
import shlex

from lifeboat.errors import ConfigError

LSN_RE = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")


def shell_arg(value: str) -> str:
    """One shell word inside a PostgreSQL %-command: shell-quoted, and every '%' doubled so
    PostgreSQL does not read a '%f' or '%p' inside a path as its own placeholder."""
    return shlex.quote(value).replace("%", "%%")


def pg_string(value: str) -> str:
    """A quoted string for postgresql.conf: the configuration parser reads backslash
    escapes and doubled single quotes inside quotes."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise ConfigError(f"a PostgreSQL setting cannot contain a line break or NUL: {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def setting(name: str, value: str) -> str:
    """A postgresql.conf line with its value quoted."""
    return f"{name} = {pg_string(value)}"


def check_xid(text: str) -> str:
    """A valid transaction id, or a one-line error."""
    value = text.strip()
    if not value.isdigit() or not value.isascii():
        raise ConfigError(f"--xid must be a transaction id (an integer), not {text!r}")
    if int(value) >= 1 << 64:
        raise ConfigError(f"--xid {text} is out of range")
    return str(int(value))


def check_lsn(text: str) -> str:
    """A valid LSN, or a one-line error."""
    value = text.strip()
    if not LSN_RE.match(value):
        raise ConfigError(f"--lsn must be an LSN such as 0/3000060 (hex/hex), not {text!r}")
    return value.upper()
