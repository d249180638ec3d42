"""Checks on an objects asset's source: versioning, lifecycle, size."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lifeboat.assets.objects.source import source_for

if TYPE_CHECKING:
    from lifeboat.assets.objects.model import ObjectsAsset
    from lifeboat.policy import Policy


@dataclass
class SourceReport:
    """What `objects inspect` found about a source bucket."""

    source: str
    versioning: str
    objects: int
    bytes: int
    warnings: list[str] = field(default_factory=list)
    fixed: bool = False


def inspect_source(policy: Policy, asset: ObjectsAsset, fix: bool = False) -> SourceReport:
    """Versioning, lifecycle rules, object count and size of an objects asset's source."""
    source = source_for(asset)
    versioning = source.versioning()
    objects = source.list_current()
    report = SourceReport(asset.source, versioning, len(objects), sum(o.size for o in objects))
    if asset.source.startswith("s3://") and versioning != "Enabled":
        if fix:
            source.enable_versioning()
            report.versioning, report.fixed = source.versioning(), True
        else:
            report.warnings.append(
                "versioning is not enabled: restores between snapshots are impossible and an "
                "overwrite destroys the only copy (fix with --fix)"
            )
    days = source.lifecycle_noncurrent_days()
    retention_days = (
        policy.classes[asset.class_].retention.min_days or 7 * policy.classes[asset.class_].retention.daily
    )
    if days is not None and days < retention_days:
        report.warnings.append(
            f"a lifecycle rule expires noncurrent versions after {days} days, sooner than the "
            f"class retention ({retention_days} days)"
        )
    return report
