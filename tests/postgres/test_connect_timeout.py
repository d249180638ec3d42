"""Which connect timeout lifeboat's PostgreSQL connections use (pure logic: the dsn and
the environment are parsed, nothing connects)."""

from __future__ import annotations

import pytest

from lifeboat.assets.postgres.connection import CONNECT_TIMEOUT_S, _connect_timeout


@pytest.mark.parametrize(
    ("dsn", "env", "ours"),
    [
        ("host=db port=5432", None, True),
        ("host=db connect_timeout=600", None, False),  # the operator's, in the dsn
        ("postgresql://backup@db/app?connect_timeout=3", None, False),
        ("host=db", "600", False),  # libpq's PGCONNECT_TIMEOUT
        ("host=db connect_timeout=abc", None, True),  # psycopg would refuse it: ours, as before
        ("host=db connect_timeout=", None, True),
        ("host=db", "5s", True),
        ("host=db", "", True),
        ("host=db connect_timeout=2.5", None, False),  # psycopg reads int(float(value))
        ("host=db connect_timeout=" + "9" * 400, None, True),  # psycopg refuses an infinite one
        ("host=db connect_timeout=abc", "7", True),  # the dsn's value is the one libpq reads
        ("host='unterminated", None, True),  # malformed: psycopg.connect says so
    ],
)
def test_the_operators_timeout_is_kept_when_libpq_would_use_it(
    dsn: str, env: str | None, ours: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is None:
        monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("PGCONNECT_TIMEOUT", env)
    assert _connect_timeout(dsn) == (CONNECT_TIMEOUT_S if ours else None)
