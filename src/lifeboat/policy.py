"""The policy's frozen, validated pydantic models: one per table of the policy file.

Each asset is validated by its kind's own model, which the registry supplies (policy.py
sits below `assets/` and names no kind); `policy_file.py` reads the file into them, and
the values the tables hold (durations, sizes, windows, URLs) are in `policy_values.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol, Self, cast, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from lifeboat.errors import ConfigError

# the values are imported from here by most of lifeboat (`x as x`: re-exported)
from lifeboat.policy_values import Duration as Duration
from lifeboat.policy_values import Window as Window
from lifeboat.policy_values import check_repository_url as check_repository_url
from lifeboat.policy_values import check_transport as check_transport
from lifeboat.policy_values import cron_valid
from lifeboat.policy_values import format_duration as format_duration
from lifeboat.policy_values import parse_duration as parse_duration
from lifeboat.policy_values import parse_size as parse_size

MODE_DEFAULTS = {"production": (35, 2), "staging": (7, 1), "development": (0, 1)}


class Section(BaseModel):
    """A table of the policy file: frozen, unknown keys refused, built on first use."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)


class StorageLocation(Section):
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
        check_transport(self.endpoint_url, self.allow_insecure_http, self.role_arn)
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
        if len(value.split()) not in (5, 6) or not cron_valid(
            value, second_at_beginning=len(value.split()) == 6
        ):
            raise ValueError(f"bad cron schedule {value!r} (5 fields, or 6 with seconds first)")
        return value


class StateConfig(Section):
    dir: Path = Path(".lifeboat")


class ModeConfig(Section):
    min_days: int | None = Field(default=None, ge=0)
    escrow_threshold: int | None = Field(default=None, ge=1)


class DeploymentConfig(Section):
    mode: str = "production"
    modes: dict[str, ModeConfig] = Field(default_factory=dict)


class Retention(Section):
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


class DataClass(Section):
    rpo: Duration
    rto: Duration
    retention: Retention = Field(default_factory=Retention)
    drill_every: Duration = timedelta(days=30)
    success_target: float = Field(default=0.99, ge=0, le=1)
    key_max_age: Duration = timedelta(days=365)


class AssetBase(Section):
    """What every asset's table has, whatever its kind. Each kind's own keys are in its
    model (`assets/<kind>/model.py`), a subclass the registry supplies (`AssetModels`)."""

    name: str = ""
    kind: str
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
            or not cron_valid(value, second_at_beginning=len(value.split()) == 6)
        ):
            raise ValueError(f"bad cron schedule {value!r} (5 fields, or 6 with seconds first)")
        return value

    # what a drill's cross-check may use this asset as: "database" (its restored server is
    # queried) or "objects" (the keys the query returns are looked up in its restored files)
    cross_check_roles: ClassVar[frozenset[str]] = frozenset()

    def with_paths_resolved(self, resolve: Callable[[Path], Path]) -> Self:
        """This asset with the relative paths it names made absolute (see `Policy.resolve`)."""
        return self

    def local_paths(self) -> list[tuple[Path, str]]:
        """What `policy check` expects on this host for a backup to read: each path that
        must exist, with the finding to report when it does not."""
        return []

    @classmethod
    def of(cls, asset: AssetBase) -> Self:
        """`asset` typed as this kind's model (a kind's own code narrowing what the policy
        holds); ConfigError naming the asset when it is of another kind."""
        if not isinstance(asset, cls):
            kind = get_args(cls.model_fields["kind"].annotation) or (cls.__name__,)
            raise ConfigError(f"{asset.name!r} is not {_a([str(kind[0])])} asset")
        return asset


class AssetModels(Protocol):
    """The asset kinds a policy may name and the model validating each one's table.
    Supplied by the layer that knows the kinds (`lifeboat.assets.registry.ASSET_MODELS`):
    the policy itself names none."""

    def kinds(self) -> Sequence[str]:
        """The registered kind names, for error messages."""
        ...

    def model(self, kind: str) -> type[AssetBase] | None:
        """The model of a kind (imported on first use); None for an unknown kind."""
        ...


ASSET_MODELS_KEY = "asset_models"  # the validation context's key for the `AssetModels`


def _models(info: ValidationInfo) -> AssetModels:
    models = info.context.get(ASSET_MODELS_KEY) if isinstance(info.context, dict) else None
    if models is None:  # a programming error: load policies through the registry
        raise TypeError("a policy is validated with the registered asset models (see load_policy)")
    return cast("AssetModels", models)


def _by_kind(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    """Validate one asset's table with its kind's model."""
    if isinstance(value, AssetBase) or not isinstance(value, dict):
        return handler(value)
    models = _models(info)
    kind = value.get("kind")
    if kind is None:
        raise ValueError(f"missing 'kind' (one of: {', '.join(models.kinds())})")
    model = models.model(kind) if isinstance(kind, str) else None
    if model is None:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(models.kinds())})")
    return model.model_validate(value, context=info.context)


Asset = Annotated[AssetBase, WrapValidator(_by_kind)]


def _a(kinds: Sequence[str]) -> str:
    """'a postgres', 'an objects': the kinds named in an error, with their article."""
    named = " or ".join(kinds) or "suitable"
    return f"{'an' if named[0] in 'aeiou' else 'a'} {named}"


class EscrowConfig(Section):
    threshold: int = Field(default=2, ge=1)
    custodians: list[str] = Field(default_factory=list)


class CrossCheck(Section):
    database: str
    objects: str
    query: str
    dbname: str | None = None


class DrillConfig(Section):
    name: str = ""
    scenario: Literal["pg-pitr", "objects-restore", "keys-recovery", "full-outage"]
    assets: list[str] = Field(default_factory=list)
    every: Duration = timedelta(days=30)
    evidence_dir: Path = Path("docs/operations/drills")
    shares: list[Path] = Field(default_factory=list)
    cross_checks: list[CrossCheck] = Field(default_factory=list)
    repository: str | None = None  # a [copies.NAME] to restore from: proves the copy works


class Webhook(Section):
    url: str
    format: Literal["json", "slack"] = "json"


class AlertsConfig(Section):
    webhooks: list[Webhook] = Field(default_factory=list)


class DaemonConfig(Section):
    listen: str = "127.0.0.1:9187"
    concurrency: int = Field(default=2, ge=1)
    jitter: Duration = timedelta(seconds=30)
    check_every: Duration = timedelta(days=1)
    read_data_every: Duration = timedelta(days=7)  # every pack read once per period...
    read_data_parts: int = Field(default=7, ge=1)  # ...in this many parts (check --read-data-subset)
    retention_every: Duration = timedelta(days=1)
    retries: int = Field(default=3, ge=0)


class Policy(Section):
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
    def _cross_references(self, info: ValidationInfo) -> Policy:
        for name, asset in self.assets.items():
            if asset.class_ not in self.classes:
                known = ", ".join(sorted(self.classes)) or "none defined"
                raise ValueError(f"assets.{name}.class: unknown class {asset.class_!r} (known: {known})")
        for name, drill in self.drills.items():
            for asset_name in drill.assets:
                if asset_name not in self.assets:
                    raise ValueError(f"drills.{name}.assets: unknown asset {asset_name!r}")
            for i, cc in enumerate(drill.cross_checks):
                for role, asset_name in (("database", cc.database), ("objects", cc.objects)):
                    roles = self.assets[asset_name].cross_check_roles if asset_name in self.assets else ()
                    if role not in roles:
                        raise ValueError(
                            f"drills.{name}.cross_checks.{i}.{role}: {asset_name!r} is not "
                            f"{_a(_kinds_for(_models(info), role))} asset"
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

    def asset(self, name: str) -> AssetBase:
        try:
            return self.assets[name]
        except KeyError:
            raise ConfigError.unknown_asset(name, self.assets) from None

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

    def effective_min_days(self, asset: str) -> int:
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


def _kinds_for(models: AssetModels, role: str) -> list[str]:
    """The kinds whose assets may take `role` in a drill's cross-check."""
    return [
        kind
        for kind in models.kinds()
        if (model := models.model(kind)) is not None and role in model.cross_check_roles
    ]
