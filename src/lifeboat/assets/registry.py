"""Dispatch from an asset's kind to the module that captures and restores it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lifeboat.errors import ConfigError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo import Repository, SnapshotInfo

KINDS = ("files", "postgres", "objects", "keys")


def backup_asset(
    policy: Any, name: str, repo: Repository, progress: ProgressSink = NO_PROGRESS
) -> SnapshotInfo:
    asset = policy.asset(name)
    if asset.kind == "files":
        from lifeboat.assets.files import backup_paths

        return backup_paths(
            repo, name, [Path(p) for p in asset.paths], exclude=asset.exclude, progress=progress
        )
    if asset.kind == "postgres":
        from lifeboat.assets.postgres import backup_postgres

        return backup_postgres(policy, asset, repo, progress)
    if asset.kind == "objects":
        from lifeboat.assets.objects import backup_objects

        return backup_objects(policy, asset, repo, progress)
    if asset.kind == "keys":
        from lifeboat.assets.keys import backup_keys

        return backup_keys(policy, asset, repo, progress)
    raise ConfigError(f"asset {name}: unknown kind {asset.kind!r} (known: {', '.join(KINDS)})")
