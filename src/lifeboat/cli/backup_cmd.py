"""`lifeboat backup [ASSET...]`: back up now."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import typer

from lifeboat import runtime
from lifeboat.assets.registry import backup_asset
from lifeboat.cli.app import app
from lifeboat.cli.common import console, err_console, human_bytes, print_json, progress_bar, run_context
from lifeboat.errors import LifeboatError
from lifeboat.ops.deadline import deadline
from lifeboat.policy import format_duration
from lifeboat.redact import redact
from lifeboat.units import format_rate

if TYPE_CHECKING:
    from lifeboat.assets.postgres.pagecheck import BadPage


def bad_pages_of(snapshot_id: str, labels: dict[str, str]) -> list[BadPage] | None:
    from lifeboat.assets.postgres import pagecheck  # psycopg: only once a PostgreSQL backup ran

    return pagecheck.bad_pages_of(snapshot_id, labels)


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
    policy = run_context(ctx).policy()
    names = assets or list(policy.assets)
    for name in names:
        policy.asset(name)  # unknown names fail before any work starts
    repo = runtime.open_for_write(policy)
    audit = runtime.audit_log(policy, repo)
    results = []
    failed = False
    for name in names:
        started = time.monotonic()
        try:
            limit = policy.asset(name).timeout
            stop = (
                f"backup of {name} stopped: it ran past its timeout of {format_duration(limit)}"
                if limit
                else ""
            )
            with deadline(limit, stop), progress_bar(f"backup {name}") as bar:
                info = backup_asset(policy, name, repo, bar)
        except LifeboatError as exc:
            audit.append("backup", asset=name, outcome="failed", error=exc.message)
            if len(names) == 1:
                raise
            failed = True
            results.append({"asset": name, "ok": False, "error": exc.message})
            if not json_out:
                console.print(f"backup {name} failed: {redact(exc.message)}", soft_wrap=True, markup=False)
            continue
        bad_pages = bad_pages_of(info.id, info.labels) if "page_checksums" in info.labels else None
        extra: dict[str, Any] = {"bad_pages": len(bad_pages)} if bad_pages else {}
        audit.append(
            "backup",
            asset=name,
            snapshot=info.id,
            bytes=info.stats.bytes,
            added=info.stats.stored_bytes,
            **extra,
        )
        seconds = time.monotonic() - started
        result = {
            "asset": name,
            "ok": True,
            "snapshot": info.id,
            "stats": info.stats,
            "labels": info.labels,
            "seconds": round(seconds, 3),
        }
        if bad_pages is not None:
            result["bad_pages"] = [b.to_json() for b in bad_pages]
        results.append(result)
        if bad_pages:
            warn_bad_pages(name, info.short_id, bad_pages)
        if not json_out:
            s = info.stats
            rate = format_rate(s.bytes / seconds if seconds > 0 else 0.0)
            console.print(
                f"{name}: snapshot {info.short_id}, {s.files} files, {human_bytes(s.bytes)} "
                f"({human_bytes(s.new_bytes)} new, {human_bytes(s.stored_bytes)} stored) "
                f"in {seconds:.1f}s ({rate})"
            )
    if json_out:
        print_json(results)
    if failed:
        raise typer.Exit(1)


def warn_bad_pages(name: str, snapshot: str, pages: list[BadPage]) -> None:
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
