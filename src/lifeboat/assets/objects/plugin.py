"""The `objects` kind's plug-in: a bucket (or directory) restored point-in-time and verified."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from lifeboat.assets.kind import (
    AssetKind,
    BackupRequest,
    BackupResult,
    DrillContext,
    DrillRestore,
    RestoreCheck,
    RestoreRequest,
    RestoreResult,
    RestoreRun,
)

if TYPE_CHECKING:
    from lifeboat.assets.kind import AssetSpec
    from lifeboat.assets.objects.model import ObjectsAsset


def _spec(asset: AssetSpec) -> ObjectsAsset:
    # imported on use: `status` under a policy it validated before loads no pydantic
    from lifeboat.assets.objects.model import ObjectsAsset

    return ObjectsAsset.of(asset)


class ObjectsKind(AssetKind):
    """Buckets and directories of objects, with their version history."""

    name = "objects"
    restore_options = frozenset({"in_place", "shards", "shard"})
    drill_scenarios = frozenset({"objects-restore", "full-outage"})

    def backup(self, request: BackupRequest) -> BackupResult:
        """Capture the source's current objects into one snapshot."""
        from lifeboat.assets.objects.backup import backup_objects

        return BackupResult(
            backup_objects(request.policy, _spec(request.asset), request.repo, request.progress)
        )

    def validate(self, asset: AssetSpec, request: RestoreRequest) -> None:
        """An in-place restore needs --yes (or --dry-run)."""
        from lifeboat.assets.objects.restore import refuse_unconfirmed

        refuse_unconfirmed(request)

    def restore(self, run: RestoreRun) -> RestoreResult:
        """Restore the objects into the target and verify each one's checksum."""
        from lifeboat.assets.objects.restore import restore_objects

        done = restore_objects(run)
        check = RestoreCheck(
            "object checksums", done.ok, f"{done.restored} objects verified, {len(done.failed)} failed"
        )
        return RestoreResult(
            done.ok, done.asset, done.snapshot, done.target, list(done.summary), done.to_dict(), [check]
        )

    def capture_source(self, asset: AssetSpec, at: datetime | None) -> object:
        """Each key's version on the source at the reference time (before the drill restores)."""
        from lifeboat.assets.objects.drill import state_at
        from lifeboat.assets.objects.source import source_for
        from lifeboat.assets.rpo import Unavailable

        source = source_for(_spec(asset))
        if at is None:
            return {o.key: o for o in source.list_current()}
        if source.versioning() != "Enabled":
            return Unavailable("the source keeps no versions, so its state at a past time is not known")
        return state_at(source.list_versions(), at)

    def drill(self, ctx: DrillContext) -> DrillRestore:
        """Restore the snapshot at the drill's point into a staging directory."""
        from lifeboat.assets.files.plugin import snapshot_entries
        from lifeboat.assets.objects.drill import objects_rpo
        from lifeboat.assets.objects.keypaths import key_to_path

        info = ctx.repo.find_snapshot(ctx.asset.name, at=ctx.at)
        result = ctx.restore(RestoreRequest(ctx.asset.name, f"dir://{ctx.staging}", snapshot_id=info.id))
        # the time its data was read: a sharded snapshot's listing, hours before its commit
        rpo = objects_rpo(ctx.reference, ctx.source, snapshot_entries(ctx.repo, info), info.data_time)
        root = ctx.staging

        def locate(key: str) -> Path:
            return root / key_to_path(key)

        return DrillRestore(info.data_time, result.summary[0], rpo, result.checks, locate=locate)

    def endpoint(self, asset: AssetSpec) -> tuple[str | None, bool] | None:
        """The source bucket's endpoint (policy check warns about plain http)."""
        spec = _spec(asset)
        return spec.endpoint_url, spec.allow_insecure_http

    def reachable(self, asset: AssetSpec) -> str | None:
        """A bucket source that cannot be seen from here (a directory is not checked)."""
        from lifeboat.assets.objects.source import source_for
        from lifeboat.errors import LifeboatError

        spec = _spec(asset)
        if not spec.source.startswith("s3://"):
            return None
        try:
            source_for(spec, workers=1).ensure_exists()
        except LifeboatError as exc:
            return f"cannot see bucket {spec.source}: {exc.message}"
        return None

    def shards(self, asset: AssetSpec) -> int | None:
        """`shards = N` of the asset."""
        return _spec(asset).shards


PLUGIN = ObjectsKind()
