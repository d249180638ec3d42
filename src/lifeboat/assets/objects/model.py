"""The policy table of an `objects` asset: the bucket (or directory) source, how to reach
it, and how its backups are sharded."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import ClassVar, Literal, Self

from pydantic import Field, field_validator, model_validator

from lifeboat.policy import AssetBase, Duration, check_transport


class ObjectsAsset(AssetBase):
    """`kind = "objects"`: a versioned bucket or a directory, restored to a point in time."""

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

    # a drill's cross-check looks the queried keys up in the restored objects
    cross_check_roles: ClassVar[frozenset[str]] = frozenset({"objects"})

    def local_paths(self) -> list[tuple[Path, str]]:
        """A dir:// source must exist."""
        if not self.source.startswith("dir://"):
            return []
        path = Path(self.source.removeprefix("dir://"))
        return [(path, f"path {path} does not exist")]

    @model_validator(mode="after")
    def _transport(self) -> Self:
        check_transport(self.endpoint_url, self.allow_insecure_http, self.role_arn)
        return self

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not (value.startswith("s3://") or value.startswith("dir://")):
            raise ValueError(f"bad source {value!r} (use s3://bucket/prefix or dir:///path)")
        return value


MODEL = ObjectsAsset
