"""The registry of asset kinds: a kind's name -> the package holding its policy model
(`model.py`, `MODEL`) and its `AssetKind` plug-in (`plugin.py`, `PLUGIN`).

Models and plug-ins are imported only when asked for (a policy loads the models of the
kinds it uses), so `wal push` never loads psycopg, boto3 or another kind's code.
Adding a data class is one package under `assets/` plus one line in `KINDS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from lifeboat.assets.kind import AssetKind, BackupRequest, BackupResult
from lifeboat.errors import ConfigError
from lifeboat.progress import NO_PROGRESS, ProgressSink

if TYPE_CHECKING:
    from lifeboat.assets.kind import AssetSpec
    from lifeboat.policy import AssetBase, Policy
    from lifeboat.repo import Repository

# kind name -> its package: `model.py` exposes `MODEL` (the asset's policy table, a
# subclass of `policy.AssetBase`), `plugin.py` exposes `PLUGIN: AssetKind`
KINDS: dict[str, str] = {
    "files": "lifeboat.assets.files",
    "postgres": "lifeboat.assets.postgres",
    "objects": "lifeboat.assets.objects",
    "keys": "lifeboat.assets.keys",
}

_loaded: dict[str, AssetKind] = {}
_models: dict[str, type[AssetBase]] = {}


def plugin(kind: str) -> AssetKind:
    """The plug-in of a kind name (ConfigError for an unknown or unavailable kind)."""
    if kind in _loaded:
        return _loaded[kind]
    found: AssetKind = _module(kind, "plugin").PLUGIN
    _loaded[kind] = found
    return found


def model(kind: str) -> type[AssetBase] | None:
    """The policy model of a kind name; None for an unknown kind (the policy says which)."""
    if kind in _models:
        return _models[kind]
    if kind not in KINDS:
        return None
    found: type[AssetBase] = _module(kind, "model").MODEL
    _models[kind] = found
    return found


def _module(kind: str, part: str) -> ModuleType:
    package = KINDS.get(kind)
    if package is None:
        raise ConfigError(f"unknown asset kind {kind!r} (known: {', '.join(KINDS)})")
    try:
        return importlib.import_module(f"{package}.{part}")
    except ImportError:
        raise ConfigError(f"asset kind {kind!r} is not available in this installation") from None


class _Registered:
    """The registered kinds as the policy's `AssetModels`."""

    def kinds(self) -> Sequence[str]:
        return tuple(KINDS)

    def model(self, kind: str) -> type[AssetBase] | None:
        return model(kind)


ASSET_MODELS = _Registered()


def load_policy(path: Path | str) -> Policy:
    """Read and validate a policy file, each asset by its registered kind's model."""
    from lifeboat import policy_file  # pydantic: not for the callers that only ask about kinds

    return policy_file.load_policy(path, ASSET_MODELS)


def policy_from_bytes(raw: bytes, path: Path) -> Policy:
    """``load_policy`` of bytes already read from ``path``."""
    from lifeboat import policy_file

    return policy_file.policy_from_bytes(raw, path, ASSET_MODELS)


def kind_of(asset: AssetSpec) -> AssetKind:
    """The plug-in for one asset of the policy."""
    return plugin(asset.kind)


def assets_with(policy: Policy, has: Callable[[AssetKind, AssetSpec], bool]) -> list[str]:
    """Names of the policy's assets whose plug-in answers `has` (policy order)."""
    return [name for name, asset in policy.assets.items() if has(kind_of(asset), asset)]


def restore_option_kinds(option: str) -> list[str]:
    """The kinds that accept a kind-specific restore option; [] for an option every kind takes."""
    return [kind for kind in KINDS if option in plugin(kind).restore_options]


def backup_asset(
    policy: Policy, name: str, repo: Repository, progress: ProgressSink = NO_PROGRESS
) -> BackupResult:
    """Back up one asset of the policy through its kind's plug-in."""
    asset = policy.asset(name)
    return kind_of(asset).backup(BackupRequest(policy, asset, repo, progress))
