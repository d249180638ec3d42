"""Storage drivers: where repository bytes live (local filesystem, S3-compatible)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from lifeboat.errors import ConfigError
from lifeboat.storage.base import ObjectStat, Storage, Tampering, VersionedStorage


def open_storage(
    url: str,
    *,
    endpoint_url: str | None = None,
    lock_days: int | None = None,
    region: str | None = None,
    stall_timeout: float | None = None,
    trust_endpoint: bool = False,
    profile: str | None = None,
    role_arn: str | None = None,
) -> Storage:
    """A driver for ``file:///path``, a plain path, or ``s3://bucket/prefix``.

    ``stall_timeout``: seconds a network transfer may make no progress before the attempt
    is aborted (S3 only; default 60). ``trust_endpoint``: skip the probe of what the S3
    endpoint enforces (unsafe; for endpoints such as moto that do not enforce Object Lock).
    ``profile`` / ``role_arn``: the repository's own AWS credentials (see
    storage/credentials.py); the usual chain without them."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        from lifeboat.storage.local import LocalStorage

        path = parsed.path if parsed.scheme == "file" else url
        return LocalStorage(Path(path), lock_days=lock_days)
    if parsed.scheme == "s3":
        from lifeboat.storage.s3 import DEFAULT_STALL_TIMEOUT, S3Storage, client_config

        if not parsed.netloc:
            raise ConfigError(f"repository url {url!r} names no bucket")
        client = None
        if profile or role_arn:
            from lifeboat.s3times import parse_times_in_c
            from lifeboat.storage.credentials import aws_session, s3_client

            session = aws_session(profile=profile, role_arn=role_arn, region=region, what="repository")
            parse_times_in_c(session)
            client = s3_client(
                session,
                endpoint_url,
                region_name=region,
                config=client_config(stall_timeout or DEFAULT_STALL_TIMEOUT),
            )
        return S3Storage(
            parsed.netloc,
            parsed.path.strip("/"),
            endpoint_url=endpoint_url,
            region=region,
            lock_days=lock_days,
            client=client,
            stall_timeout=stall_timeout or DEFAULT_STALL_TIMEOUT,
            trust_endpoint=trust_endpoint,
        )
    raise ConfigError(f"unsupported repository url {url!r} (use file:///path or s3://bucket/prefix)")


__all__ = ["ObjectStat", "Storage", "Tampering", "VersionedStorage", "open_storage"]
