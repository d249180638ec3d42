"""The policy file (TOML) read into the policy's models, relative paths made absolute.

Every validation problem becomes one line naming the file, the dotted key and the
problem, e.g. ``lifeboat.toml: assets.maindb.class: unknown class 'crit' (known: critical)``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lifeboat.errors import ConfigError
from lifeboat.policy import ASSET_MODELS_KEY, AssetModels, Policy


def _resolve_paths(policy: Policy) -> Policy:
    """Relative paths in the file are relative to the file's directory."""
    repo = policy.repository
    updates: dict[str, Any] = {
        "repository": repo.model_copy(
            update={
                "keyfile": policy.resolve(repo.keyfile),
                "recovery_key": policy.resolve(repo.recovery_key) if repo.recovery_key else None,
                "url": _resolve_url(policy, repo.url),
            }
        ),
    }
    updates["assets"] = {
        name: asset.with_paths_resolved(policy.resolve) for name, asset in policy.assets.items()
    }
    updates["drills"] = {
        name: d.model_copy(
            update={
                "evidence_dir": policy.resolve(d.evidence_dir),
                "shares": [policy.resolve(s) for s in d.shares],
            }
        )
        for name, d in policy.drills.items()
    }
    updates["copies"] = {
        name: c.model_copy(update={"url": _resolve_url(policy, c.url)}) for name, c in policy.copies.items()
    }
    return policy.model_copy(update=updates)


def _resolve_url(policy: Policy, url: str) -> str:
    if "://" in url:
        return url
    return f"file://{policy.resolve(url)}"


def load_policy(path: Path | str, models: AssetModels) -> Policy:
    """Read and validate a policy file, each asset by its kind's model from `models`
    (callers above `assets/` use `lifeboat.assets.registry.load_policy`)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"policy file {path} does not exist",
            hint='create one: see README "Configuration reference", or pass --config FILE',
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc.strerror}") from None
    return policy_from_bytes(raw, path, models)


def policy_from_bytes(raw: bytes, path: Path, models: AssetModels) -> Policy:
    """Validate the policy file ``path`` as these bytes of it (a caller that hashed them
    validates exactly what it hashed, whatever the file holds by now)."""
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_policy(data, path, models)


def parse_policy(data: dict[str, Any], path: Path, models: AssetModels) -> Policy:
    """Validate a policy read from `path` (ConfigError: one line naming the key)."""
    data = {**data, "path": path.absolute()}
    try:
        policy = Policy.model_validate(data, context={ASSET_MODELS_KEY: models})
    except ValidationError as exc:
        # an unknown key first: a misspelt key (`pahts`) also makes the real one missing, and
        # the misspelling is what to fix
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        where = f"{loc}: " if loc and not msg.startswith(loc) else ""
        raise ConfigError(f"{path}: {where}{msg}{more}") from None
    return _resolve_paths(policy)
