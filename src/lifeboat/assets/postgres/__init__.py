"""The `postgres` asset: base backups, WAL archiving, point-in-time restores, checks.
Everything lifeboat knows about PostgreSQL lives in this package."""

from lifeboat.assets.postgres.backup import backup_postgres
from lifeboat.assets.postgres.restore import restore_postgres

__all__ = ["backup_postgres", "restore_postgres"]
