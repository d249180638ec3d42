"""The `files` kind's plug-in: directories and files restored and verified as a tree."""

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
from lifeboat.units import format_bytes

if TYPE_CHECKING:
    from lifeboat.assets.files.model import FilesAsset
    from lifeboat.assets.kind import AssetSpec
    from lifeboat.repo import Entry, Repository, SnapshotInfo


def _spec(asset: AssetSpec) -> FilesAsset:
    # imported on use: `status` under a policy it validated before loads no pydantic
    from lifeboat.assets.files.model import FilesAsset

    return FilesAsset.of(asset)


def snapshot_entries(repo: Repository, info: SnapshotInfo) -> list[Entry]:
    """The entries of a snapshot (what drills compare with the source)."""
    return list(repo.reader(info).entries())


def capture_tree(paths: list[Path], exclude: list[str], at: datetime | None) -> object:
    """Drills: each regular file's (size, mtime_ns) now; a past time is not knowable."""
    import stat

    from lifeboat.assets.files.tree import walk
    from lifeboat.assets.rpo import Unavailable

    if at is not None:
        return Unavailable("a file's state at a past time is not known")
    return {
        i.name: (i.st.st_size, i.st.st_mtime_ns) for i in walk(paths, exclude) if stat.S_ISREG(i.st.st_mode)
    }


class FilesKind(AssetKind):
    """Files and directories with modes, times, owners and symlinks."""

    name = "files"

    def backup(self, request: BackupRequest) -> BackupResult:
        """Walk the asset's paths into one snapshot."""
        from lifeboat.assets.files.tree import backup_paths

        asset = _spec(request.asset)
        info = backup_paths(
            request.repo,
            asset.name,
            [Path(p) for p in asset.paths],
            exclude=asset.exclude,
            progress=request.progress,
        )
        return BackupResult(info)

    def restore(self, run: RestoreRun) -> RestoreResult:
        """Restore the snapshot's tree into the target (every file verified)."""
        from lifeboat.assets.files.tree import restore_snapshot

        assert run.snapshot is not None and run.request.target is not None
        info, target = run.snapshot, run.request.target
        stats = restore_snapshot(run.repo, info, Path(target), force=run.request.force, progress=run.progress)
        details = {
            "ok": True,
            "asset": run.asset.name,
            "snapshot": info.id,
            "target": target,
            "files": stats.files,
            "dirs": stats.dirs,
            "symlinks": stats.symlinks,
            "bytes": stats.bytes,
            "verified": stats.verified,
            "seconds": stats.seconds,
        }
        line = (
            f"{run.asset.name}: restored {stats.files} files ({format_bytes(stats.bytes)}), "
            f"{stats.dirs} dirs, {stats.symlinks} symlinks from snapshot "
            f"{info.id[:12]} into {target} in {stats.seconds:.1f}s; {stats.verified} files verified"
        )
        check = RestoreCheck("file checksums", True, f"{stats.verified} files verified")
        return RestoreResult(True, run.asset.name, info.id, target, [line], details, [check])

    def capture_source(self, asset: AssetSpec, at: datetime | None) -> object:
        """The files' sizes and times before the drill restores them."""
        spec = _spec(asset)
        return capture_tree([Path(p) for p in spec.paths], spec.exclude, at)

    def drill(self, ctx: DrillContext) -> DrillRestore:
        """Restore the newest snapshot at the drill's point into staging; compare with the source."""
        from lifeboat.assets.rpo import files_rpo

        info = ctx.repo.find_snapshot(ctx.asset.name, at=ctx.at)
        result = ctx.restore(RestoreRequest(ctx.asset.name, str(ctx.staging), snapshot_id=info.id))
        rpo = files_rpo(ctx.reference, ctx.source, snapshot_entries(ctx.repo, info), info.time)
        return DrillRestore(info.time, f"{result.details['files']} files restored", rpo, result.checks)


PLUGIN = FilesKind()
