"""The `objects` asset: versioned backup replication of a bucket (or directory) into
immutable snapshots, and point-in-time restores into staging or in place."""

from lifeboat.assets.objects.backup import backup_objects
from lifeboat.assets.objects.restore import restore_objects

__all__ = ["backup_objects", "restore_objects"]
