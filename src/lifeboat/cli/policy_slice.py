"""The slice of the policy the per-segment and polled commands need (`wal push`, `wal
fetch`, `snapshots`, `status`), kept sealed in the state dir so that they need not validate it.

PostgreSQL runs `wal push` and `wal fetch` once per WAL segment and scripts list
`snapshots`. Validating the whole policy costs more than any of them: pydantic's import and
model building take ~190 ms of a 450 ms push. So a command whose policy file is byte for
byte one an earlier run validated takes that run's result from `<state dir>/cache/policy-
slice/` and never imports pydantic. The file is encrypted and authenticated under a key
derived from the backup key (repo/local_cache.py: `status` keeps the dsn it asks, which may
carry a password), and the key file is the one the policy names: somebody who may rewrite
or read the state dir but holds no key cannot point the commands at another repository, nor
read a password. A file that does not open or whose digest does not hold is ignored, and the
policy is validated again, as on a first run. Without a backup key file (a host that only
restores) nothing is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifeboat import __version__

if TYPE_CHECKING:
    from lifeboat.assets.postgres.model import PostgresAsset
    from lifeboat.ops.status_view import StatusView
    from lifeboat.policy import Policy

# the form of a cached entry: a change to PolicySlice changes it
FORMAT = 3
CACHE_DIR = "policy-slice"
_DEFAULT_KEYFILE = "keys/backup.key"  # RepositoryConfig.keyfile's default
_DEFAULT_STATE_DIR = ".lifeboat"  # StateConfig.dir's default
_DEFAULT_EVIDENCE_DIR = "docs/operations/drills"  # DrillConfig.evidence_dir's default
VALIDATING_MODULES = (
    "policy.py",
    "policy_values.py",
    "policy_file.py",
    "assets/postgres/model.py",
    "assets/files/model.py",
    "assets/keys/model.py",
    "assets/objects/model.py",
    "assets/registry.py",  # which model validates each kind's table
    "units.py",
    # what `status` keeps: its view, and each kind's status settings and host
    "ops/status_view.py",
    "assets/kind.py",
    "assets/files/plugin.py",
    "assets/keys/plugin.py",
    "assets/objects/plugin.py",
    "assets/postgres/plugin.py",
    "assets/postgres/standby.py",
    "cli/policy_slice.py",
)


@dataclass(frozen=True)
class Location:
    """[repository] as `runtime.open_for_write` and `runtime.open_for_read` read it."""

    url: str
    endpoint_url: str | None
    region: str | None
    profile: str | None
    role_arn: str | None
    lock_days: int | None
    stall_timeout: timedelta
    trust_endpoint: bool
    keyfile: Path
    recovery_key: Path | None


@dataclass(frozen=True)
class Deployment:
    mode: str


@dataclass(frozen=True)
class WalAsset:
    """The PostgreSQL asset `--asset` names (or the policy's only one)."""

    name: str
    wal_async: bool


@dataclass(frozen=True)
class PolicySlice:
    """What the fast commands take from a validated policy (a `runtime.ReadSettings`)."""

    assets: tuple[str, ...]
    state_dir: Path
    repository: Location
    deployment: Deployment
    threshold: int  # the escrow threshold of the deployment mode
    wal: WalAsset | None  # for `wal push` and `wal fetch`
    status: StatusView | None = field(default=None, repr=False)  # for `status` (a dsn may carry a password)

    def escrow_threshold(self) -> int:
        return self.threshold

    @classmethod
    def of(cls, policy: Policy, wal: WalAsset | None = None, status: StatusView | None = None) -> PolicySlice:
        repo = policy.repository
        plain = {f.name: getattr(repo, f.name) for f in fields(Location)}
        return cls(
            assets=tuple(policy.assets),
            state_dir=Path(policy.state_dir),
            repository=Location(**plain | {"url": str(repo.url), "keyfile": Path(repo.keyfile)}),
            deployment=Deployment(str(policy.deployment.mode)),
            threshold=policy.escrow_threshold(),
            wal=wal,
            status=status,
        )

    def to_json(self) -> dict[str, Any]:
        location = asdict(self.repository)
        location["stall_timeout"] = self.repository.stall_timeout.total_seconds()
        for name in ("keyfile", "recovery_key"):
            location[name] = str(location[name]) if location[name] is not None else None
        return {
            "assets": list(self.assets),
            "state_dir": str(self.state_dir),
            "repository": location,
            "mode": self.deployment.mode,
            "threshold": self.threshold,
            "wal": asdict(self.wal) if self.wal else None,
            "status": self.status.to_json() if self.status else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PolicySlice:
        location = dict(data["repository"])
        location["stall_timeout"] = timedelta(seconds=float(location["stall_timeout"]))
        location["keyfile"] = Path(location["keyfile"])
        location["recovery_key"] = Path(location["recovery_key"]) if location["recovery_key"] else None
        wal, status = data["wal"], data["status"]
        return cls(
            assets=tuple(str(name) for name in data["assets"]),
            state_dir=Path(data["state_dir"]),
            repository=Location(**location),
            deployment=Deployment(str(data["mode"])),
            threshold=int(data["threshold"]),
            wal=WalAsset(str(wal["name"]), bool(wal["wal_async"])) if wal is not None else None,
            status=_status_view(status) if status is not None else None,
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


def wal_slice_of(policy: Policy, asset: str | None) -> tuple[PolicySlice, WalAsset]:
    """The slice of a validated policy for `wal push` and `wal fetch`, and their asset."""
    name = postgres_asset(policy, asset)
    wal = WalAsset(name, postgres_spec(policy, name).wal_async)
    return PolicySlice.of(policy, wal), wal


def wal_slice(config: Path, asset: str | None) -> tuple[PolicySlice, WalAsset]:
    """`wal_slice_of` the policy file, cached."""
    found = _load(config, "wal", asset, lambda policy: wal_slice_of(policy, asset)[0])
    if found.wal is None:
        raise ValueError("a WAL slice without its asset")  # wal_slice_of made every "wal" entry
    return found, found.wal


def listing_slice(config: Path) -> PolicySlice:
    """`snapshots`: the slice without a WAL asset."""
    return _load(config, "listing", None, PolicySlice.of)


def _status_view(data: dict[str, Any]) -> StatusView:
    from lifeboat.ops.status_view import StatusView  # `status` alone: not for a WAL segment's push

    return StatusView.from_json(data)


def status_slice(config: Path) -> tuple[PolicySlice, StatusView]:
    """`status`: the slice and what status reads of the policy (ops/status_view.py)."""
    from lifeboat.ops.status_view import StatusView

    found = _load(config, "status", None, lambda policy: PolicySlice.of(policy, status=StatusView.of(policy)))
    if found.status is None:
        raise ValueError("a status slice without its view")  # status_slice made every "status" entry
    return found, found.status


@dataclass(frozen=True)
class _CacheSlot:
    """Where a command with this policy file finds its cached slice, and the values a
    cached entry must match: they depend on the filesystem (symlinks, `~`), not on the
    file's bytes alone, so they are derived again on every run."""

    raw: bytes  # the policy file as read: what is hashed is what gets validated
    digest: str  # of everything else the validated result depends on
    paths: tuple[Path, Path, Path | None, str]  # state dir, key file, recovery key, URL
    path: Path
    evidence: tuple[tuple[str, Path], ...]  # each drill's evidence directory (`status`)

    @property
    def keyfile(self) -> Path:
        return self.paths[1]

    @property
    def tag_name(self) -> str:
        return f"{CACHE_DIR}/{self.path.name}"

    def holds(self, found: PolicySlice) -> bool:
        repo = found.repository
        if (found.state_dir, repo.keyfile, repo.recovery_key, repo.url) != self.paths:
            return False
        if found.status is None:
            return True
        return tuple(sorted((n, d.evidence_dir) for n, d in found.status.drills.items())) == self.evidence


def _load(
    config: Path, purpose: str, asset: str | None, build: Callable[[Policy], PolicySlice]
) -> PolicySlice:
    """Cached when this policy file was validated before, else validated now (errors are
    the user's: one line) and cached for the next run."""
    slot = _slot(config, purpose, asset)
    cached = _read(slot) if slot is not None else None
    if cached is not None:
        return cached
    from lifeboat.assets.registry import load_policy, policy_from_bytes

    if slot is None:  # unreadable, or not TOML: the full load says why
        return build(load_policy(config))

    made = build(policy_from_bytes(slot.raw, config))
    _write(slot, made)
    return made


def _slot(config: Path, purpose: str, asset: str | None) -> _CacheSlot | None:
    """The cache slot, found from the policy file's raw TOML (None when the file cannot be
    read or its paths are not plain strings: the full validation then says why)."""
    import tomllib

    try:
        raw = config.read_bytes()
        data = tomllib.loads(raw.decode())
        state_dir = _raw_path(config, data, "state", "dir", _DEFAULT_STATE_DIR)
        keyfile = _raw_path(config, data, "repository", "keyfile", _DEFAULT_KEYFILE)
        recovery_key = _raw_path(config, data, "repository", "recovery_key", None)
        url = data.get("repository", {}).get("url")
        if isinstance(url, str) and "://" not in url:  # a plain path, as `_resolve_url` takes it
            url = f"file://{_resolved(config, url)}"
        # status alone reads the drills' evidence: a push never touches those directories
        evidence = _raw_evidence_dirs(config, data) if purpose == "status" else ()
    except (OSError, ValueError, TypeError, AttributeError, RuntimeError):
        return None
    if state_dir is None or keyfile is None or not isinstance(url, str):
        return None
    # relative paths resolve against the file's directory, `~` against $HOME; a new version
    # of the validation (an upgrade rewrites these files) may judge the same bytes otherwise
    key = [purpose, asset or ""]
    inputs = [str(FORMAT), __version__, *_code_stamp(), str(config.absolute()), os.environ.get("HOME", "")]
    hasher = hashlib.sha256("\0".join([*inputs, *key]).encode() + b"\0")
    hasher.update(raw)
    # one slot per policy file: two policies sharing a state dir must not evict each other
    name = hashlib.sha256("\0".join([str(config.absolute()), *key]).encode()).hexdigest()[:16]
    paths = (state_dir, keyfile, recovery_key, url)
    return _CacheSlot(raw, hasher.hexdigest(), paths, state_dir / "cache" / CACHE_DIR / name, evidence)


def _raw_evidence_dirs(config: Path, data: dict[str, Any]) -> tuple[tuple[str, Path], ...]:
    """Each drill's evidence directory from the raw TOML, resolved as `Policy.resolve` does
    (a symlink on the way may have moved since the slice was made)."""
    drills = data.get("drills", {})
    found = []
    for name, table in drills.items():
        value = table.get("evidence_dir", _DEFAULT_EVIDENCE_DIR)
        if not isinstance(value, str):
            raise TypeError(f"drills.{name}.evidence_dir is not a path")  # the validation says why
        found.append((str(name), _resolved(config, value)))
    return tuple(sorted(found))


def _code_stamp() -> list[str]:
    """Size and time of the modules that validate a policy (installed anew by an upgrade)."""
    package = Path(__file__).resolve().parents[1]
    stamps = []
    for module in VALIDATING_MODULES:
        try:
            info = (package / module).stat()
            stamps.append(f"{module}:{info.st_size}:{info.st_mtime_ns}")
        except OSError:
            stamps.append(f"{module}:-")
    return stamps


def _raw_path(config: Path, data: dict[str, Any], table: str, key: str, default: str | None) -> Path | None:
    """A path from the raw TOML resolved as `Policy.resolve` does (None: absent, no
    default). Should the two ever differ, the cached entry names other paths than the slot
    and is never used."""
    value = data.get(table, {}).get(key, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{table}.{key} is not a path")  # the full validation says why
    return _resolved(config, value)


def _resolved(config: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (config.absolute().parent / path).resolve()


def _read(slot: _CacheSlot) -> PolicySlice | None:
    from lifeboat import runtime
    from lifeboat.errors import LifeboatError

    try:
        stored = slot.path.read_bytes()
        data = runtime.keyfile_seal(slot.keyfile).decrypt(slot.tag_name, stored)
        if data is None:
            return None
        entry = json.loads(data)
        if entry.get("digest") != slot.digest:
            return None  # another policy file's (or this one's before an edit)
        found = PolicySlice.from_json(entry["slice"])
    except (OSError, LifeboatError, ValueError, KeyError, TypeError):
        return None
    return found if slot.holds(found) else None


def _write(slot: _CacheSlot, made: PolicySlice) -> None:
    """Best effort: a state dir this user may not write, or no key file, leaves each run
    validating."""
    from lifeboat import runtime
    from lifeboat.errors import LifeboatError
    from lifeboat.private import private_dir, write_private

    if not slot.holds(made):
        return
    entry = json.dumps({"digest": slot.digest, "slice": made.to_json()}).encode()
    try:
        cache = runtime.cache_dir(made)
        if cache is None:
            return
        private_dir(cache / CACHE_DIR)
        write_private(slot.path, runtime.keyfile_seal(slot.keyfile).encrypt(slot.tag_name, entry))
    except (OSError, LifeboatError):
        pass
