"""The `keys` kind's plug-in: key files restored with tight modes and fingerprint-checked."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from lifeboat.assets.files.plugin import capture_tree, snapshot_entries
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
    from lifeboat.assets.keys.model import KeysAsset
    from lifeboat.assets.kind import AssetSpec


def _spec(asset: AssetSpec) -> KeysAsset:
    # imported on use: `status` under a policy it validated before loads no pydantic
    from lifeboat.assets.keys.model import KeysAsset

    return KeysAsset.of(asset)


class KeysKind(AssetKind):
    """Key material: restoring it needs the escrow threshold, not only a key file."""

    name = "keys"
    drill_scenarios = frozenset({"keys-recovery", "full-outage"})
    needs_escrow = True

    def backup(self, request: BackupRequest) -> BackupResult:
        """Capture the key files with their fingerprints."""
        from lifeboat.assets.keys.capture import backup_keys

        asset = _spec(request.asset)
        return BackupResult(backup_keys(request.policy, asset, request.repo, request.progress))

    def restore(self, run: RestoreRun) -> RestoreResult:
        """Restore the key files and compare each fingerprint with the backup's."""
        from lifeboat.assets.keys.capture import restore_keys

        assert run.snapshot is not None and run.request.target is not None
        details = restore_keys(
            run.repo, run.snapshot, Path(run.request.target), run.request.force, run.progress
        )
        matched = sum(1 for k in details["keys"] if k["match"])
        check = RestoreCheck(
            "key fingerprints", bool(details["ok"]), f"{matched} of {len(details['keys'])} fingerprints match"
        )
        return RestoreResult(
            bool(details["ok"]),
            run.asset.name,
            run.snapshot.id,
            str(details["target"]),
            list(details["summary"]),
            details,
            [check],
        )

    def capture_source(self, asset: AssetSpec, at: datetime | None) -> object:
        """The key files' sizes and times before the drill restores them."""
        spec = _spec(asset)
        return capture_tree([Path(p) for p in spec.paths], spec.exclude, at)

    def drill(self, ctx: DrillContext) -> DrillRestore:
        """Restore the key files into staging and check their fingerprints."""
        from lifeboat.assets.rpo import files_rpo

        info = ctx.repo.find_snapshot(ctx.asset.name, at=ctx.at)
        result = ctx.restore(RestoreRequest(ctx.asset.name, str(ctx.staging), snapshot_id=info.id))
        rpo = files_rpo(ctx.reference, ctx.source, snapshot_entries(ctx.repo, info), info.time)
        return DrillRestore(info.time, result.summary[0], rpo, result.checks)


PLUGIN = KeysKind()
