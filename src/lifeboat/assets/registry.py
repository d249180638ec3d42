"""Dispatch from an asset's kind to the module that captures and restores it.

Each kind's module exposes ``backup_<kind>(policy, asset, repo, progress) -> SnapshotInfo``
and ``restore_<kind>(policy, asset, repo, options, progress) -> dict`` (a summary that
the CLI renders as text or JSON; ``ok`` False means a failed verification).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lifeboat.errors import ConfigError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo import Repository, SnapshotInfo

# kind -> verb -> module; imported only when used, so `wal push` never loads psycopg
KINDS = {
    "postgres": {"backup": "lifeboat.assets.postgres.backup", "restore": "lifeboat.assets.postgres.restore"},
    "objects": {"backup": "lifeboat.assets.objects", "restore": "lifeboat.assets.objects"},
    "keys": {"backup": "lifeboat.assets.keys", "restore": "lifeboat.assets.keys"},
}

# `restore` options that mean something only for some kinds; any other option applies to
# every kind. The CLI refuses an option given for a kind that would silently ignore it.
RESTORE_OPTIONS: dict[str, frozenset[str]] = {
    "files": frozenset(),
    "keys": frozenset(),
    "objects": frozenset({"in_place", "shards", "shard"}),
    "postgres": frozenset(
        {"lsn", "xid", "name", "latest", "port", "start", "archive", "timeline", "standby"}
    ),
}


def restore_option_kinds(option: str) -> list[str]:
    """The kinds that accept a kind-specific restore option; [] for an option every kind takes."""
    return [kind for kind, accepted in RESTORE_OPTIONS.items() if option in accepted]


def _function(kind: str, verb: str) -> Callable[..., Any]:
    module_name = KINDS.get(kind, {}).get(verb)
    if module_name is None:
        raise ConfigError(f"unknown asset kind {kind!r} (known: files, {', '.join(KINDS)})")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(f"asset kind {kind!r} is not available in this installation") from None
    function = getattr(module, f"{verb}_{kind}", None)
    if function is None:
        raise ConfigError(f"asset kind {kind!r} cannot {verb} in this installation")
    return function  # type: ignore[no-any-return]


def backup_asset(
    policy: Any, name: str, repo: Repository, progress: ProgressSink = NO_PROGRESS
) -> SnapshotInfo:
    asset = policy.asset(name)
    if asset.kind == "files":
        from lifeboat.assets.files import backup_paths

        return backup_paths(
            repo, name, [Path(p) for p in asset.paths], exclude=asset.exclude, progress=progress
        )
    info: SnapshotInfo = _function(asset.kind, "backup")(policy, asset, repo, progress)
    return info


def restore_asset(
    policy: Any, asset: Any, repo: Repository, options: dict[str, Any], progress: ProgressSink = NO_PROGRESS
) -> dict[str, Any]:
    result: dict[str, Any] = _function(asset.kind, "restore")(policy, asset, repo, options, progress)
    return result
