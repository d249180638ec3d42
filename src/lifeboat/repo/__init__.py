"""The repository: content-addressed, encrypted, deduplicated, append-only storage of
snapshots. The only package that knows the repository format
(docs/design/repository-format.md)."""

from lifeboat.repo.backup import BackupSession
from lifeboat.repo.model import (
    CheckReport,
    Entry,
    ForgetReport,
    Problem,
    PruneReport,
    RefInfo,
    SnapshotInfo,
    SnapshotStats,
)
from lifeboat.repo.reader import RestoreStats, SnapshotReader, safe_relative, target_is_empty
from lifeboat.repo.repository import RecordsView, Repository
from lifeboat.repo.retention import KeepRules, select_keep

__all__ = [
    "BackupSession",
    "CheckReport",
    "Entry",
    "ForgetReport",
    "KeepRules",
    "Problem",
    "PruneReport",
    "RecordsView",
    "RefInfo",
    "Repository",
    "RestoreStats",
    "SnapshotInfo",
    "SnapshotReader",
    "SnapshotStats",
    "safe_relative",
    "select_keep",
    "target_is_empty",
]
