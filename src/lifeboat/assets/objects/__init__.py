"""The `objects` asset: versioned backup replication of a bucket (or directory) into
immutable snapshots, and point-in-time restores into staging or in place.

Nothing is imported here: asking the registry about this kind (plugin.py) must not load
boto3 (see backup.py, restore.py, source.py)."""
