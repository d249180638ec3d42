"""The `postgres` asset: base backups, WAL archiving, point-in-time restores, checks.
Everything lifeboat knows about PostgreSQL lives in this package.

Nothing is imported here: `wal push` runs once per WAL segment and must not pay for
psycopg or the restore code (see backup.py, wal.py, restore.py)."""
