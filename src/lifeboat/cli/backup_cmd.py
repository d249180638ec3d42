"""`lifeboat backup [ASSET...]`: back up now."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import err_console, human_bytes, print_json, progress_bar, run_context
from lifeboat.cli.output import print_lines
from lifeboat.redact import redact
from lifeboat.repo.model import PARENT_CACHE_REJECTED
from lifeboat.units import format_rate

if TYPE_CHECKING:
    from lifeboat.assets.kind import Finding
    from lifeboat.repo.model import SnapshotInfo
    from lifeboat.services.backup import AssetBackup


@app.command()
def backup(
    ctx: typer.Context,
    assets: list[str] = typer.Argument(None, help="Assets to back up (default: all)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    plan_shards: int = typer.Option(
        None, "--plan-shards", min=1, help="Objects: plan a sharded run of N shards; prints its run id."
    ),
    inventory: str = typer.Option(
        None, "--inventory", help="Objects: plan from this S3 Inventory report (s3://.../manifest.json)."
    ),
    run: str = typer.Option(None, "--run", help="Objects: the sharded run to work on."),
    shard: int = typer.Option(
        None, "--shard", min=0, help="Objects: back up this shard of --run (default: $JOB_COMPLETION_INDEX)."
    ),
    commit: bool = typer.Option(
        False, "--commit", help="Objects: publish --run's snapshot once all shards are done."
    ),
    shards: int = typer.Option(
        None, "--shards", min=1, help="Objects: plan, back up N shards in local processes, commit."
    ),
) -> None:
    """Back up assets now: all of them, or those named."""
    if any(v is not None for v in (plan_shards, inventory, run, shard, shards)) or commit:
        from lifeboat.cli.shards_cmd import sharded_backup

        sharded_backup(ctx, assets, json_out, plan_shards, inventory, run, shard, commit, shards)
        return
    from lifeboat.services.backup import backup as backup_service

    policy = run_context(ctx).policy()
    names = assets or list(policy.assets)

    def show(result: AssetBackup) -> None:
        if result.failure is not None and len(names) == 1:
            return  # one asset: its error is the command's (below)
        if result.snapshot is not None and result.bad_pages:
            warn_bad_pages(result.asset, result.snapshot.short_id, result.bad_pages)
        if result.snapshot is not None:
            warn_rewritten_cache(result.asset, result.snapshot)
        if not json_out:
            print_result(result)

    report = backup_service(policy, names, progress=progress_bar, on_result=show)
    if len(names) == 1 and report.assets[0].failure is not None:
        raise report.assets[0].failure.error()
    if json_out:
        print_json([result_json(r) for r in report.assets])
    if report.failed:
        raise typer.Exit(1)


def result_json(result: AssetBackup) -> dict[str, Any]:
    """The --json shape of one asset's outcome."""
    if result.failure is not None or result.snapshot is None:
        return {"asset": result.asset, "ok": False, "error": result.failure.message if result.failure else ""}
    info = result.snapshot
    data: dict[str, Any] = {
        "asset": result.asset,
        "ok": True,
        "snapshot": info.id,
        "stats": info.stats,
        "labels": info.labels,
        "seconds": round(result.seconds, 3),
    }
    if result.bad_pages is not None:
        data["bad_pages"] = [b.to_json() for b in result.bad_pages]
    return data


def print_result(result: AssetBackup) -> None:
    """One line per asset: what was stored, or why it failed. Written past rich, as a
    restore's summary is (cli/output.print_lines): importing and setting up rich for this
    one line was ~15 ms at the end of every backup."""
    if result.failure is not None or result.snapshot is None:
        message = result.failure.message if result.failure else ""
        print_lines([f"backup {result.asset} failed: {redact(message)}"])
        return
    info, seconds = result.snapshot, result.seconds
    s = info.stats
    rate = format_rate(s.bytes / seconds if seconds > 0 else 0.0)
    print_lines(
        [
            f"{result.asset}: snapshot {info.short_id}, {s.files} files, {human_bytes(s.bytes)} "
            f"({human_bytes(s.new_bytes)} new, {human_bytes(s.stored_bytes)} stored) "
            f"in {seconds:.1f}s ({rate}){_left_out(info.labels)}"
        ]
    )


def _left_out(labels: dict[str, str]) -> str:
    """What a file tree's walk found and did not store (assets/files/tree.py's labels)."""
    parts = []
    if labels.get("vanished"):
        parts.append(f"{labels['vanished']} file(s) deleted or replaced during the backup left out")
    if labels.get("not_captured"):
        parts.append(f"{labels['not_captured']} socket(s), device(s) or fifo(s) not captured")
    return "; " + "; ".join(parts) if parts else ""


def warn_bad_pages(name: str, snapshot: str, pages: list[Finding]) -> None:
    """On stderr whatever the output format: the snapshot is committed (exit 0), but it
    holds the corruption, and every later backup will too until the page is repaired."""
    err_console.print(
        f"[yellow]WARNING[/yellow]: {name}: {len(pages)} page(s) failed checksum verification; "
        f"snapshot {snapshot} holds them as they are on disk",
        soft_wrap=True,
    )
    for page in pages:
        err_console.print(f"  bad page: {page.describe()}", soft_wrap=True, markup=False)
    err_console.print(
        "  hint: restore those relations from an older snapshot or rebuild them "
        "(docs/operations/runbooks/database-pitr.md, Bad pages)",
        soft_wrap=True,
        markup=False,
    )


def warn_rewritten_cache(name: str, snapshot: SnapshotInfo) -> None:
    """On stderr: lines of the parent cache in the state dir failed their MAC. The backup is
    sound (those files were read again), but somebody without the key file rewrote the
    state dir."""
    rejected = snapshot.labels.get(PARENT_CACHE_REJECTED)
    if not rejected:
        return
    err_console.print(
        f"[yellow]WARNING[/yellow]: {name}: {rejected} entries of the parent cache failed their "
        f"MAC (a block with one rewritten line is refused whole) and were read again (snapshot "
        f"{snapshot.short_id}); the state dir was modified by something other than lifeboat",
        soft_wrap=True,
    )
