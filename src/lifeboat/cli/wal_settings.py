"""The slice of the policy a `wal push` needs (the asset, whether it archives asynchronously,
the repository's location and key file, the state dir), kept sealed in the state dir.

PostgreSQL runs `wal push` once per WAL segment. Validating the whole policy costs more
than the push itself: pydantic's import and model building take ~190 ms of a 450 ms push.
So a push whose policy file is byte for byte the one an earlier push validated takes that
push's result from `<state dir>/cache/wal-push/` and never imports pydantic. The file is
tagged under the backup key's cache key (repo/local_cache.py), and the key file is the one
the policy names: somebody who may rewrite the state dir but holds no key cannot point the
pushes at another repository. A file whose tag or digest does not hold is ignored, and the
policy is validated again, as on a first push.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifeboat import __version__

if TYPE_CHECKING:
    from lifeboat.assets.postgres.model import PostgresAsset
    from lifeboat.policy import Policy

# the form of a cached entry: a change to WalPushSettings changes it
FORMAT = 1
CACHE_DIR = "wal-push"
_DEFAULT_KEYFILE = "keys/backup.key"  # RepositoryConfig.keyfile's default
_DEFAULT_STATE_DIR = ".lifeboat"  # StateConfig.dir's default
VALIDATING_MODULES = (
    "policy.py",
    "policy_values.py",
    "policy_file.py",
    "assets/postgres/model.py",
    "cli/wal_settings.py",
)


@dataclass(frozen=True)
class Location:
    """[repository] as `runtime.open_for_write` reads it."""

    url: str
    endpoint_url: str | None
    region: str | None
    profile: str | None
    role_arn: str | None
    lock_days: int | None
    stall_timeout: timedelta
    trust_endpoint: bool
    keyfile: Path


@dataclass(frozen=True)
class WalPushSettings:
    """What one `wal push` takes from a validated policy (a `runtime.Settings`)."""

    asset: str
    wal_async: bool
    state_dir: Path
    repository: Location

    @classmethod
    def from_policy(cls, policy: Policy, asset: str | None) -> WalPushSettings:
        name = postgres_asset(policy, asset)
        repo = policy.repository
        location = {f.name: getattr(repo, f.name) for f in fields(Location)}
        return cls(
            asset=name,
            wal_async=postgres_spec(policy, name).wal_async,
            state_dir=Path(policy.state_dir),
            repository=Location(**location | {"url": str(repo.url), "keyfile": Path(repo.keyfile)}),
        )

    def to_json(self) -> dict[str, Any]:
        location = asdict(self.repository)
        location |= {"stall_timeout": self.repository.stall_timeout.total_seconds()}
        location |= {"keyfile": str(self.repository.keyfile)}
        return {"asset": self.asset, "wal_async": self.wal_async, "state_dir": str(self.state_dir)} | {
            "repository": location
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WalPushSettings:
        location = dict(data["repository"])
        location["stall_timeout"] = timedelta(seconds=float(location["stall_timeout"]))
        location["keyfile"] = Path(location["keyfile"])
        return cls(
            asset=str(data["asset"]),
            wal_async=bool(data["wal_async"]),
            state_dir=Path(data["state_dir"]),
            repository=Location(**location),
        )


def postgres_spec(policy: Policy, name: str) -> PostgresAsset:
    """A PostgreSQL asset's policy section (ConfigError for an asset of another kind)."""
    from lifeboat.assets.postgres.model import PostgresAsset
    from lifeboat.errors import ConfigError

    spec = policy.asset(name)
    if not isinstance(spec, PostgresAsset):
        raise ConfigError(f"{name!r} is not a postgres asset")
    return spec


def postgres_asset(policy: Policy, asset: str | None) -> str:
    """The asset named by --asset, or the only PostgreSQL asset of the policy."""
    from lifeboat.assets.registry import assets_with, kind_of
    from lifeboat.errors import ConfigError

    spec = policy.assets.get(asset) if asset else None
    if spec is not None and kind_of(spec).archives_wal:
        return str(asset)  # archive_command names its asset: other kinds' plug-ins stay unloaded
    names = assets_with(policy, lambda kind, _: kind.archives_wal)
    if asset:
        if asset not in names:
            raise ConfigError(
                f"{asset!r} is not a postgres asset (postgres assets: {', '.join(names) or 'none'})"
            )
        return asset
    if len(names) != 1:
        raise ConfigError("several postgres assets: name one with --asset", hint=f"known: {', '.join(names)}")
    return str(names[0])


@dataclass(frozen=True)
class _CacheSlot:
    """Where a push with this policy file and --asset finds its cached settings, and the
    three values a cached entry must match: they depend on the filesystem (symlinks, `~`),
    not on the file's bytes alone, so they are derived again on every push."""

    raw: bytes  # the policy file as read: what is hashed is what gets validated
    digest: str  # of everything else the validated result depends on
    state_dir: Path
    keyfile: Path
    url: str
    path: Path

    @property
    def tag_name(self) -> str:
        return f"{CACHE_DIR}/{self.path.name}"

    def holds(self, settings: WalPushSettings) -> bool:
        found = (settings.state_dir, settings.repository.keyfile, settings.repository.url)
        return found == (self.state_dir, self.keyfile, self.url)


def load_settings(config: Path, asset: str | None) -> WalPushSettings:
    """The push's settings: cached when this policy file was validated before, else
    validated now (errors are the user's: one line) and cached for the next push."""
    slot = _slot(config, asset)
    cached = _read(slot) if slot is not None else None
    if cached is not None:
        return cached
    from lifeboat.assets.registry import load_policy, policy_from_bytes

    if slot is None:  # unreadable, or not TOML: the full load says why
        return WalPushSettings.from_policy(load_policy(config), asset)
    settings = WalPushSettings.from_policy(policy_from_bytes(slot.raw, config), asset)
    _write(slot, settings)
    return settings


def _slot(config: Path, asset: str | None) -> _CacheSlot | None:
    """The cache slot, found from the policy file's raw TOML (None when the file cannot be
    read or its paths are not plain strings: the full validation then says why)."""
    import tomllib

    try:
        raw = config.read_bytes()
        data = tomllib.loads(raw.decode())
        state_dir = _raw_path(config, data, "state", "dir", _DEFAULT_STATE_DIR)
        keyfile = _raw_path(config, data, "repository", "keyfile", _DEFAULT_KEYFILE)
        url = data.get("repository", {}).get("url")
        if isinstance(url, str) and "://" not in url:  # a plain path, as `_resolve_url` takes it
            url = f"file://{_resolved(config, url)}"
    except (OSError, ValueError, TypeError, AttributeError, RuntimeError):
        return None
    if state_dir is None or keyfile is None or not isinstance(url, str):
        return None
    # relative paths resolve against the file's directory, `~` against $HOME; a new version
    # of the validation (an upgrade rewrites these files) may judge the same bytes otherwise
    inputs = [str(FORMAT), __version__, *_code_stamp(), str(config.absolute()), os.environ.get("HOME", "")]
    hasher = hashlib.sha256("\0".join([*inputs, asset or ""]).encode() + b"\0")
    hasher.update(raw)
    name = hashlib.sha256((asset or "").encode()).hexdigest()[:16]
    return _CacheSlot(
        raw, hasher.hexdigest(), state_dir, keyfile, url, state_dir / "cache" / CACHE_DIR / name
    )


def _code_stamp() -> list[str]:
    """Size and time of the modules that validate a policy (installed anew by an upgrade)."""
    package = Path(__file__).resolve().parents[1]
    stamps = []
    for module in (
        "policy.py",
        "policy_values.py",
        "policy_file.py",
        "assets/postgres/model.py",
        "cli/wal_settings.py",
    ):
        try:
            info = (package / module).stat()
            stamps.append(f"{module}:{info.st_size}:{info.st_mtime_ns}")
        except OSError:
            stamps.append(f"{module}:-")
    return stamps


def _raw_path(config: Path, data: dict[str, Any], table: str, key: str, default: str) -> Path | None:
    """A path from the raw TOML resolved as `Policy.resolve` does. Should the two ever
    differ, the cached entry names other paths than the slot and is never used."""
    value = data.get(table, {}).get(key, default)
    return _resolved(config, value) if isinstance(value, str) else None


def _resolved(config: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (config.absolute().parent / path).resolve()


def _read(slot: _CacheSlot) -> WalPushSettings | None:
    from lifeboat import runtime
    from lifeboat.errors import LifeboatError

    try:
        stored = slot.path.read_bytes()
        data = runtime.keyfile_seal(slot.keyfile).open(slot.tag_name, stored)
        if data is None:
            return None
        entry = json.loads(data)
        if entry.get("digest") != slot.digest:
            return None  # another policy file's (or this one's before an edit)
        settings = WalPushSettings.from_json(entry["settings"])
    except (OSError, LifeboatError, ValueError, KeyError, TypeError):
        return None
    return settings if slot.holds(settings) else None


def _write(slot: _CacheSlot, settings: WalPushSettings) -> None:
    """Best effort: a state dir this user may not write leaves each push validating."""
    from lifeboat import runtime
    from lifeboat.errors import LifeboatError
    from lifeboat.private import private_dir, write_private

    if not slot.holds(settings):
        return
    entry = json.dumps({"digest": slot.digest, "settings": settings.to_json()}).encode()
    try:
        cache = runtime.cache_dir(settings)
        if cache is None:
            return
        private_dir(cache / CACHE_DIR)
        write_private(slot.path, runtime.keyfile_seal(slot.keyfile).seal(slot.tag_name, entry))
    except (OSError, LifeboatError):
        pass
