"""The policy table of a `postgres` asset: the server, how its base backups are taken,
and the SQL checks a restore runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, field_validator, model_validator

from lifeboat.policy import AssetBase, Section, parse_size


class SqlCheck(Section):
    """A query a restore runs on the restored server; `expect` is its first value's text."""

    name: str
    sql: str
    expect: str | None = None
    database: str | None = None


class PostgresAsset(AssetBase):
    """`kind = "postgres"`: a cluster's base backups and WAL, restored to a point in time."""

    kind: Literal["postgres"]
    pgdata: Path | None = None
    dsn: str
    pg_bin: Path | None = None
    checks: list[SqlCheck] = Field(default_factory=list)
    chunk_size: int | None = None
    wal_async: bool = False
    stream: bool = False
    # base backups read a streaming standby (its pgdata, or pg_basebackup from it); the
    # primary (dsn) only archives WAL (see backup.py, backup_from_standby)
    backup_from: Literal["primary", "standby"] = "primary"
    standby_dsn: str | None = None
    standby_pgdata: Path | None = None

    # a drill's cross-check queries the restored server
    cross_check_roles: ClassVar[frozenset[str]] = frozenset({"database"})

    @field_validator("chunk_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _standby(self) -> Self:
        if self.backup_from == "standby" and not self.standby_dsn:
            raise ValueError('backup_from = "standby" needs standby_dsn (the standby to read)')
        return self

    def with_paths_resolved(self, resolve: Callable[[Path], Path]) -> Self:
        """pgdata and standby_pgdata made absolute against the policy file's directory."""
        changes = {
            key: resolve(value)
            for key, value in (("pgdata", self.pgdata), ("standby_pgdata", self.standby_pgdata))
            if value is not None
        }
        return self.model_copy(update=changes)

    def local_paths(self) -> list[tuple[Path, str]]:
        """A local pgdata must be a data directory this user can read."""
        if self.pgdata is None:
            return []
        problem = f"pgdata {self.pgdata} is not a readable PostgreSQL data directory"
        return [(Path(self.pgdata) / "PG_VERSION", problem)]


MODEL = PostgresAsset
