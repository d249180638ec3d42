"""An objects asset backed up from a moto bucket: the runner plus the bucket's client."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import boto3

from tests.harness import LifeboatCli, PolicyBuilder


def media_policy(root: Path, bucket: str, endpoint: str, **asset: Any) -> PolicyBuilder:
    """One objects asset ``media`` (``s3://bucket/media``) into a local repository."""
    return (
        PolicyBuilder()
        .repository(f"file://{root}/repo", recovery_key="keys/recovery.key")
        .data_class("important", rpo="1h", rto="1h")
        .objects("media", f"s3://{bucket}/media", cls="important", endpoint_url=endpoint, **asset)
    )


@dataclass
class BucketEnv(LifeboatCli):
    root: Path = field(default=Path("."))
    endpoint: str = ""
    bucket: str = ""

    @cached_property
    def s3(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint)

    def put(self, key: str, body: bytes, **extra: object) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=f"media/{key}", Body=body, **extra)

    def state(self, bucket: str | None = None, prefix: str = "media/") -> dict[str, tuple[str, str, dict]]:
        """key -> (sha256, content type, user metadata) of every current object."""
        bucket = bucket or self.bucket
        s3 = self.s3
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]

        def one(key: str) -> tuple[str, tuple[str, str, dict]]:
            obj = s3.get_object(Bucket=bucket, Key=key)
            digest = hashlib.sha256(obj["Body"].read()).hexdigest()
            return key[len(prefix) :], (digest, obj.get("ContentType", ""), obj.get("Metadata", {}))

        with ThreadPoolExecutor(16) as pool:
            return dict(pool.map(one, keys))
