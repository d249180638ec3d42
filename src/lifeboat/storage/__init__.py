"""Storage drivers: where repository bytes live (local filesystem, S3-compatible)."""

from lifeboat.storage.base import ObjectStat, Storage

__all__ = ["ObjectStat", "Storage"]
