"""The policy file (TOML) read into frozen, validated pydantic models.

Every validation problem becomes one line naming the file, the dotted key and the
problem, e.g. ``lifeboat.toml: assets.maindb.class: unknown class 'crit' (known: critical)``.
"""

from __future__ import annotations

import re
import tomllib
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lifeboat.errors import ConfigError

_DURATION = re.compile(r"(\d+)\s*(w|d|h|m|s)")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|K|M|G|KB|MB|GB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "K": 1024,
    "KiB": 1024,
    "KB": 1000,
    "M": 1 << 20,
    "MiB": 1 << 20,
    "MB": 10**6,
    "G": 1 << 30,
    "GiB": 1 << 30,
    "GB": 10**9,
}
MODE_DEFAULTS = {"production": (35, 2), "staging": (7, 1), "development": (0, 1)}


def parse_duration(text: str) -> timedelta:
    """'30s', '5m', '2h', '7d', '1w', '1h30m' -> timedelta."""
    stripped = text.strip()
    if not stripped or _DURATION.sub("", stripped).strip():
        raise ValueError(f"bad duration {text!r} (use e.g. 30s, 5m, 2h, 7d, 1w, 1h30m)")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(stripped)))


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def parse_size(text: str | int) -> int:
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"bad size {text!r} (use e.g. 256KiB, 4MiB)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


class Window(BaseModel):
    """An off-peak window 'HH:MM-HH:MM' (local time); may wrap midnight."""

    model_config = ConfigDict(frozen=True)
    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Window:
        match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
        if not match:
            raise ValueError(f"bad window {text!r} (use HH:MM-HH:MM, e.g. 01:00-05:00)")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
            raise ValueError(f"bad window {text!r}: hours 0-23, minutes 0-59")
        return cls(start=time(h1, m1), end=time(0, 0) if h2 == 24 else time(h2, m2))

    def contains(self, moment: time) -> bool:
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def next_start(self, after: datetime) -> datetime:
        """The earliest moment at or after ``after`` that lies inside the window."""
        if self.contains(after.time()):
            return after
        candidate = after.replace(hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0)
        return candidate if candidate >= after else candidate + timedelta(days=1)

    def end_after(self, moment: datetime) -> datetime:
        """When the window occurrence holding ``moment`` closes (the next close otherwise)."""
        end = moment.replace(
            hour=self.end.hour, minute=self.end.minute, second=self.end.second, microsecond=0
        )
        return end if end > moment else end + timedelta(days=1)

    def length(self) -> timedelta:
        start = timedelta(hours=self.start.hour, minutes=self.start.minute)
        end = timedelta(hours=self.end.hour, minutes=self.end.minute)
        return (end - start) % timedelta(days=1) or timedelta(days=1)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def _to_duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


Duration = Annotated[timedelta, BeforeValidator(_to_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# "s3:/b", "file:/x", "S3://b", "s3//b", "s3:b": a scheme mistyped; as a plain path each
# would quietly become a local directory of that odd name, and backups would land there.
_SCHEME_LIKE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)(?P<sep>:/*|//+)(?P<rest>.*)$", re.S)
_REPOSITORY_SCHEMES = {"s3": "s3://", "file": "file:///", "dir": "file:///"}


def check_repository_url(url: str) -> str:
    """``file://...``, ``s3://bucket[/prefix]`` or a plain path with no scheme-like prefix."""
    if url.startswith("s3://"):
        if not url.removeprefix("s3://").split("/", 1)[0]:
            raise ValueError(f"{url!r} names no bucket (use s3://bucket/prefix)")
        return url
    if url.startswith("file://"):
        return url
    match = _SCHEME_LIKE.match(url)
    if match is None or (match["sep"].startswith("/") and match["scheme"].lower() not in _REPOSITORY_SCHEMES):
        return url  # a plain path ("backups//x" is a path, "s3//b" is not)
    fixed = _REPOSITORY_SCHEMES.get(match["scheme"].lower())
    suggestion = f": did you mean {fixed}{match['rest'].lstrip('/')}?" if fixed else ""
    raise ValueError(
        f"{url!r} is not a repository URL{suggestion} "
        "(use s3://bucket/prefix, file:///absolute/path or a plain path)"
    )


def refuse_plain_http(endpoint_url: str | None, allowed: bool) -> None:
    """Credentials are signed, not encrypted, and the data travels in clear over http://;
    only an explicit opt-in (a local test server, a loopback proxy) may use it."""
    if endpoint_url and endpoint_url.lower().startswith("http://") and not allowed:
        raise ValueError(
            f"endpoint_url {endpoint_url.split('?')[0]!r} is plain http: requests and data travel "
            "unencrypted; use https://, or set allow_insecure_http = true in this section"
        )


_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+")


def check_role_arn(role_arn: str) -> None:
    if not _ROLE_ARN.fullmatch(role_arn):
        raise ValueError(
            f"role_arn {role_arn!r} is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)"
        )


class StorageLocation(_Model):
    """Where repository bytes live and how to reach them: the repository itself and each
    of its copies ([copies.NAME]) take the same keys."""

    url: str
    endpoint_url: str | None = None
    allow_insecure_http: bool = False
    region: str | None = None
    # this location's own AWS credentials (a shared-files profile, a role to assume)
    profile: str | None = None
    role_arn: str | None = None
    lock_days: int | None = Field(default=None, ge=1)
    # a transfer with no progress for this long is aborted and retried (S3)
    stall_timeout: Duration = timedelta(seconds=60)
    # unsafe: skip the probe of what the S3 endpoint enforces (412 on a second
    # If-None-Match PUT, Object Lock); for test endpoints like moto
    trust_endpoint: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_repository_url(value)

    @model_validator(mode="after")
    def _transport(self) -> Self:
        refuse_plain_http(self.endpoint_url, self.allow_insecure_http)
        if self.role_arn is not None:
            check_role_arn(self.role_arn)
        return self


class RepositoryConfig(StorageLocation):
    keyfile: Path = Path("keys/backup.key")
    recovery_key: Path | None = None


class CopyConfig(StorageLocation):
    """A further repository holding a verbatim copy of this one (3-2-1): another account,
    region or provider. The repository's keys open it: the bytes are the same."""

    name: str = ""
    schedule: str = "0 * * * *"  # when the daemon copies (cron), hourly by default
    copy_rpo: Duration = timedelta(days=1)  # the most the copy may lag behind the primary
    workers: int = Field(default=8, ge=1, le=64)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) not in (5, 6) or not croniter.is_valid(
            value, second_at_beginning=len(value.split()) == 6
        ):
            raise ValueError(f"bad cron schedule {value!r} (5 fields, or 6 with seconds first)")
        return value


class StateConfig(_Model):
    dir: Path = Path(".lifeboat")


class ModeConfig(_Model):
    min_days: int | None = Field(default=None, ge=0)
    escrow_threshold: int | None = Field(default=None, ge=1)


class DeploymentConfig(_Model):
    mode: str = "production"
    modes: dict[str, ModeConfig] = Field(default_factory=dict)


class Retention(_Model):
    last: int = Field(default=0, ge=0)
    hourly: int = Field(default=0, ge=0)
    daily: int = Field(default=7, ge=0)
    weekly: int = Field(default=4, ge=0)
    monthly: int = Field(default=12, ge=0)
    yearly: int = Field(default=0, ge=0)
    min_days: int = Field(default=0, ge=0)

    def summary(self) -> str:
        parts = [
            f"{getattr(self, k)} {k}"
            for k in ("last", "hourly", "daily", "weekly", "monthly", "yearly")
            if getattr(self, k)
        ]
        return ", ".join(parts) + (f", min {self.min_days}d" if self.min_days else "")


class DataClass(_Model):
    rpo: Duration
    rto: Duration
    retention: Retention = Field(default_factory=Retention)
    drill_every: Duration = timedelta(days=30)
    success_target: float = Field(default=0.99, ge=0, le=1)
    key_max_age: Duration = timedelta(days=365)


class _AssetBase(_Model):
    name: str = ""
    class_: str = Field(alias="class")
    schedule: str | None = None
    window: Window | None = None
    # heavy jobs: the daemon stops the backup cleanly when the window closes (the next
    # run reuses what was uploaded) instead of letting it run on into peak hours
    stop_at_window_end: bool = False
    # the most a backup of this asset may take; past it the backup stops, nothing committed
    timeout: Duration | None = None
    # where the asset lives, for `status` grouping (default: the dsn's host, else this machine)
    host: str | None = None

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> Any:
        return Window.parse(value) if isinstance(value, str) else value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and (
            len(value.split()) not in (5, 6)
            or not croniter.is_valid(value, second_at_beginning=len(value.split()) == 6)
        ):
            raise ValueError(f"bad cron schedule {value!r} (5 fields, or 6 with seconds first)")
        return value


class FilesAsset(_AssetBase):
    kind: Literal["files"]
    paths: list[Path] = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)


class KeysAsset(_AssetBase):
    kind: Literal["keys"]
    paths: list[Path] = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)


class SqlCheck(_Model):
    name: str
    sql: str
    expect: str | None = None
    database: str | None = None


class PostgresAsset(_AssetBase):
    kind: Literal["postgres"]
    pgdata: Path | None = None
    dsn: str
    pg_bin: Path | None = None
    checks: list[SqlCheck] = Field(default_factory=list)
    chunk_size: int | None = None
    wal_async: bool = False
    stream: bool = False
    # base backups read a streaming standby (its pgdata, or pg_basebackup from it); the
    # primary (dsn) only archives WAL (see assets/postgres/backup.py, backup_from_standby)
    backup_from: Literal["primary", "standby"] = "primary"
    standby_dsn: str | None = None
    standby_pgdata: Path | None = None

    @field_validator("chunk_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _standby(self) -> PostgresAsset:
        if self.backup_from == "standby" and not self.standby_dsn:
            raise ValueError('backup_from = "standby" needs standby_dsn (the standby to read)')
        return self


class ObjectsAsset(_AssetBase):
    kind: Literal["objects"]
    source: str
    endpoint_url: str | None = None
    allow_insecure_http: bool = False
    region: str | None = None
    profile: str | None = None  # the source's own AWS credentials, as in [repository]
    role_arn: str | None = None
    workers: int = Field(default=16, ge=1, le=256)
    stall_timeout: Duration = timedelta(seconds=60)  # of the bucket source's transfers
    # sharded backups (`backup --shards`, `schedule export --kubernetes`): N shards,
    # of which shard_parallelism run at once in the exported Indexed Job (default: all)
    shards: int | None = Field(default=None, ge=1, le=100_000)
    shard_parallelism: int | None = Field(default=None, ge=1, le=100_000)
    # plan shards from the newest S3 Inventory report under this s3:// prefix (or manifest.json)
    inventory: str | None = None

    @model_validator(mode="after")
    def _transport(self) -> ObjectsAsset:
        refuse_plain_http(self.endpoint_url, self.allow_insecure_http)
        if self.role_arn is not None:
            check_role_arn(self.role_arn)
        return self

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not (value.startswith("s3://") or value.startswith("dir://")):
            raise ValueError(f"bad source {value!r} (use s3://bucket/prefix or dir:///path)")
        return value


Asset = Annotated[FilesAsset | KeysAsset | PostgresAsset | ObjectsAsset, Field(discriminator="kind")]
ASSET_KINDS = ("files", "keys", "postgres", "objects")


class EscrowConfig(_Model):
    threshold: int = Field(default=2, ge=1)
    custodians: list[str] = Field(default_factory=list)


class CrossCheck(_Model):
    database: str
    objects: str
    query: str
    dbname: str | None = None


class DrillConfig(_Model):
    name: str = ""
    scenario: Literal["pg-pitr", "objects-restore", "keys-recovery", "full-outage"]
    assets: list[str] = Field(default_factory=list)
    every: Duration = timedelta(days=30)
    evidence_dir: Path = Path("docs/operations/drills")
    shares: list[Path] = Field(default_factory=list)
    cross_checks: list[CrossCheck] = Field(default_factory=list)
    repository: str | None = None  # a [copies.NAME] to restore from: proves the copy works


class Webhook(_Model):
    url: str
    format: Literal["json", "slack"] = "json"


class AlertsConfig(_Model):
    webhooks: list[Webhook] = Field(default_factory=list)


class DaemonConfig(_Model):
    listen: str = "127.0.0.1:9187"
    concurrency: int = Field(default=2, ge=1)
    jitter: Duration = timedelta(seconds=30)
    check_every: Duration = timedelta(days=1)
    read_data_every: Duration = timedelta(days=7)  # every pack read once per period...
    read_data_parts: int = Field(default=7, ge=1)  # ...in this many parts (check --read-data-subset)
    retention_every: Duration = timedelta(days=1)
    retries: int = Field(default=3, ge=0)


class Policy(_Model):
    repository: RepositoryConfig
    state: StateConfig = Field(default_factory=StateConfig)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)
    classes: dict[str, DataClass] = Field(default_factory=dict)
    assets: dict[str, Asset] = Field(default_factory=dict)
    escrow: EscrowConfig = Field(default_factory=EscrowConfig)
    drills: dict[str, DrillConfig] = Field(default_factory=dict)
    copies: dict[str, CopyConfig] = Field(default_factory=dict)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    path: Path = Path("lifeboat.toml")

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for table in ("assets", "drills", "copies"):
                items = data.get(table)
                if isinstance(items, dict):
                    data[table] = {
                        k: {**v, "name": k} if isinstance(v, dict) else v for k, v in items.items()
                    }
        return data

    @model_validator(mode="after")
    def _cross_references(self) -> Policy:
        for name, asset in self.assets.items():
            if asset.class_ not in self.classes:
                known = ", ".join(sorted(self.classes)) or "none defined"
                raise ValueError(f"assets.{name}.class: unknown class {asset.class_!r} (known: {known})")
        for name, drill in self.drills.items():
            for asset_name in drill.assets:
                if asset_name not in self.assets:
                    raise ValueError(f"drills.{name}.assets: unknown asset {asset_name!r}")
            for i, cc in enumerate(drill.cross_checks):
                if getattr(self.assets.get(cc.database), "kind", None) != "postgres":
                    raise ValueError(
                        f"drills.{name}.cross_checks.{i}.database: {cc.database!r} is not a postgres asset"
                    )
                if getattr(self.assets.get(cc.objects), "kind", None) != "objects":
                    raise ValueError(
                        f"drills.{name}.cross_checks.{i}.objects: {cc.objects!r} is not an objects asset"
                    )
        for name, drill in self.drills.items():
            if drill.repository is not None and drill.repository not in self.copies:
                known = ", ".join(sorted(self.copies)) or "none defined"
                raise ValueError(
                    f"drills.{name}.repository: unknown copy {drill.repository!r} (known: {known})"
                )
        threshold, source = self.escrow_source()
        if self.escrow.custodians and threshold > len(self.escrow.custodians):
            raise ValueError(
                f"{source.removeprefix('the ')}: {threshold} shares needed but only "
                f"{len(self.escrow.custodians)} custodians"
            )
        return self

    # -- derived values --------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.state.dir)

    def resolve(self, path: Path | str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def asset(self, name: str) -> Asset:
        try:
            return self.assets[name]
        except KeyError:
            known = ", ".join(sorted(self.assets)) or "none"
            raise ConfigError(f"unknown asset {name!r} (known: {known})") from None

    def copy_config(self, name: str) -> CopyConfig:
        try:
            return self.copies[name]
        except KeyError:
            known = ", ".join(sorted(self.copies)) or "none defined in [copies]"
            raise ConfigError(f"unknown repository copy {name!r} (known: {known})") from None

    def reading_from(self, name: str | None) -> Policy:
        """This policy with [copies.NAME] as its repository, for every command that reads:
        the keys are the repository's own, only where the bytes live changes."""
        if name is None:
            return self
        c = self.copy_config(name)
        repo = self.repository.model_copy(
            update={
                "url": c.url,
                "endpoint_url": c.endpoint_url,
                "region": c.region,
                "lock_days": c.lock_days,
                "stall_timeout": c.stall_timeout,
                "trust_endpoint": c.trust_endpoint,
                "allow_insecure_http": c.allow_insecure_http,
                "profile": c.profile,
                "role_arn": c.role_arn,
            }
        )
        return self.model_copy(update={"repository": repo})

    def data_class(self, asset: str) -> DataClass:
        return self.classes[self.asset(asset).class_]

    def mode_defaults(self) -> tuple[int, int]:
        min_days, threshold = MODE_DEFAULTS.get(self.deployment.mode, (0, self.escrow.threshold))
        override = self.deployment.modes.get(self.deployment.mode)
        if override is not None:
            min_days = override.min_days if override.min_days is not None else min_days
            threshold = override.escrow_threshold if override.escrow_threshold is not None else threshold
        return min_days, threshold

    def effective_min_days(self, asset: Any) -> int:
        name = asset if isinstance(asset, str) else asset.name
        return max(self.data_class(name).retention.min_days, self.mode_defaults()[0])

    def escrow_threshold(self) -> int:
        return self.escrow_source()[0]

    def escrow_source(self) -> tuple[int, str]:
        """The M of M-of-N escrow and where it comes from. A threshold the policy states is
        never lowered by the mode's default: only a statement for the mode itself wins."""
        mode = self.deployment.mode
        override = self.deployment.modes.get(mode)
        if override is not None and override.escrow_threshold is not None:
            return override.escrow_threshold, f"deployment.modes.{mode}.escrow_threshold"
        if "threshold" in self.escrow.model_fields_set:
            return self.escrow.threshold, "escrow.threshold"
        if mode in MODE_DEFAULTS:
            return MODE_DEFAULTS[mode][1], f"the default of mode {mode}"
        return self.escrow.threshold, "the default"


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
    assets: dict[str, Any] = {}
    for name, asset in policy.assets.items():
        changes: dict[str, Any] = {}
        if isinstance(asset, FilesAsset | KeysAsset):
            changes["paths"] = [policy.resolve(p) for p in asset.paths]
        if isinstance(asset, PostgresAsset) and asset.pgdata is not None:
            changes["pgdata"] = policy.resolve(asset.pgdata)
        if isinstance(asset, PostgresAsset) and asset.standby_pgdata is not None:
            changes["standby_pgdata"] = policy.resolve(asset.standby_pgdata)
        assets[name] = asset.model_copy(update=changes)
    updates["assets"] = assets
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


def _error_location(error: Any) -> str:
    return ".".join(str(p) for p in error["loc"] if not (isinstance(p, str) and p in ASSET_KINDS))


def load_policy(path: Path | str) -> Policy:
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
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_policy(data, path)


def parse_policy(data: dict[str, Any], path: Path) -> Policy:
    data = {**data, "path": path.absolute()}
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        # an unknown key first: a misspelt key (`pahts`) also makes the real one missing, and
        # the misspelling is what to fix
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        loc = _error_location(first)
        msg = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        elif first["type"] == "union_tag_invalid":
            msg = (
                f"unknown kind {first['input'].get('kind') if isinstance(first['input'], dict) else ''!r} "
                f"(known: {', '.join(ASSET_KINDS)})"
            )
        elif first["type"] == "union_tag_not_found":
            msg = f"missing 'kind' (one of: {', '.join(ASSET_KINDS)})"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        where = f"{loc}: " if loc and not msg.startswith(loc) else ""
        raise ConfigError(f"{path}: {where}{msg}{more}") from None
    return _resolve_paths(policy)
