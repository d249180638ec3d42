"""Connections to PostgreSQL: one place for the timeout, autocommit and one-line errors."""

from __future__ import annotations

from typing import Any

import psycopg

from lifeboat.errors import LifeboatError

CONNECT_TIMEOUT_S = 10


class PgError(LifeboatError):
    """PostgreSQL refused or failed."""


def connect(dsn: str) -> psycopg.Connection[Any]:
    """Connect to PostgreSQL (autocommit, 10 s timeout); a failure is a one-line PgError."""
    try:
        return psycopg.connect(
            dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="lifeboat"
        )
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        raise PgError(f"cannot connect to PostgreSQL: {first}", hint="check the asset's dsn") from None
