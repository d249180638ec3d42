"""The repository: content-addressed, encrypted, deduplicated, append-only storage of
snapshots. The only package that knows the repository format
(docs/design/repository-format.md).

Its names load on first use (PEP 562): `wal push` needs the facade, not the backup or
restore machinery, and PostgreSQL starts it once per WAL segment (issue #18)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from lifeboat.repo.records import RecordsView
    from lifeboat.repo.repository import Repository
    from lifeboat.repo.retention import KeepRules, select_keep

# each public name: the module that defines it
_HOMES = {
    "BackupSession": "backup",
    "CheckReport": "model",
    "Entry": "model",
    "ForgetReport": "model",
    "Problem": "model",
    "PruneReport": "model",
    "RefInfo": "model",
    "SnapshotInfo": "model",
    "SnapshotStats": "model",
    "RestoreStats": "reader",
    "SnapshotReader": "reader",
    "safe_relative": "reader",
    "target_is_empty": "reader",
    "RecordsView": "records",
    "Repository": "repository",
    "KeepRules": "retention",
    "select_keep": "retention",
}
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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value
