"""Connections to PostgreSQL: one place for the timeout, autocommit and one-line errors."""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from lifeboat.errors import LifeboatError

CONNECT_TIMEOUT_S = 10


class PgError(LifeboatError):
    """PostgreSQL refused or failed."""


def connect(dsn: str) -> psycopg.Connection[Any]:
    """Connect to PostgreSQL (autocommit; the connect timeout the dsn or PGCONNECT_TIMEOUT
    gives, else 10 s); a failure is a one-line PgError."""
    try:
        timeout = _connect_timeout(dsn)
        if timeout is None:
            return psycopg.connect(dsn, autocommit=True, application_name="lifeboat")
        return psycopg.connect(dsn, autocommit=True, application_name="lifeboat", connect_timeout=timeout)
    except psycopg.OperationalError as exc:
        what = f"cannot connect to PostgreSQL: {first_line(exc)}"
        raise PgError(what, hint="check the asset's dsn") from None


def first_line(exc: psycopg.Error) -> str:
    """A PostgreSQL error's first line (libpq's messages run on with details), or its type
    when it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _connect_timeout(dsn: str) -> int | None:
    """Ours unless the operator chose one (None): psycopg's keyword argument would override
    the dsn's ``connect_timeout`` and libpq's PGCONNECT_TIMEOUT. A value psycopg would
    refuse ("5s", empty) is overridden by ours, as every value was before."""
    try:
        given = conninfo_to_dict(dsn).get("connect_timeout")
    except psycopg.ProgrammingError:  # a malformed dsn: psycopg.connect says so
        given = None
    if given is None:
        given = os.environ.get("PGCONNECT_TIMEOUT")
    if given is None:
        return CONNECT_TIMEOUT_S
    try:  # psycopg's own reading of it (conninfo.timeout_from_conninfo)
        int(float(given))
    except (ValueError, OverflowError):
        return CONNECT_TIMEOUT_S
    return None
