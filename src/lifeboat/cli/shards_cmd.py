"""`lifeboat backup ASSET --plan-shards/--run/--shard/--commit/--shards`: sharded object
backups (docs/operations/runbooks/object-storage-rollback.md, Sharded backups)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

from lifeboat import runtime
from lifeboat.assets.objects.model import ObjectsAsset
from lifeboat.assets.objects.shards import restore_worker_args, worker_args
from lifeboat.cli.common import console, human_bytes, print_json, progress_bar, run_context
from lifeboat.errors import CheckFailed, ConfigError
from lifeboat.escaped_text import child_error
from lifeboat.ops.deadline import deadline
from lifeboat.policy import format_duration
from lifeboat.repo import SnapshotInfo


def _check_options(
    assets: list[str] | None,
    plan_shards: int | None,
    inventory: str | None,
    run: str | None,
    shard: int | None,
    commit: bool,
    shards: int | None,
) -> str:
    if not assets or len(assets) != 1:
        raise ConfigError("a sharded backup works on one asset: name it")
    if shards is not None and (plan_shards is not None or run or shard is not None or commit):
        raise ConfigError(
            "--shards plans, runs and commits: "
            "do not combine it with --plan-shards, --run, --shard or --commit"
        )
    if inventory and plan_shards is None and shards is None:
        raise ConfigError("--inventory is for planning: use it with --plan-shards N or --shards N")
    if plan_shards is not None and (shard is not None or commit):
        raise ConfigError("plan first, then run shards: --plan-shards takes no --shard or --commit")
    if (shard is not None or commit) and not run:
        raise ConfigError("--shard and --commit need --run RUN (the id printed by --plan-shards)")
    if shard is not None and commit:
        raise ConfigError("--shard and --commit are separate steps")
    return assets[0]


def _shard_index(shard: int | None) -> int:
    if shard is not None:
        return shard
    value = os.environ.get("JOB_COMPLETION_INDEX", "")
    if not value.isdigit():
        raise ConfigError(
            "which shard? pass --shard I", hint="an Indexed Job's pods get it from $JOB_COMPLETION_INDEX"
        )
    return int(value)


def sharded_backup(
    ctx: typer.Context,
    assets: list[str] | None,
    json_out: bool,
    plan_shards: int | None,
    inventory: str | None,
    run: str | None,
    shard: int | None,
    commit: bool,
    shards: int | None,
) -> None:
    from lifeboat.assets.objects import shards as sharding

    name = _check_options(assets, plan_shards, inventory, run, shard, commit, shards)
    context = run_context(ctx)
    policy = context.policy()
    asset = policy.asset(name)
    if not isinstance(asset, ObjectsAsset):
        raise ConfigError(f"asset {name} is a {asset.kind} asset: only objects assets back up in shards")
    repo = runtime.open_for_write(policy)
    audit = runtime.audit_log(policy, repo)
    started = time.monotonic()
    if plan_shards is not None:
        _print_plan(sharding.plan_shards(asset, repo, plan_shards, inventory, run), json_out)
        return
    if shards is not None:
        plan = sharding.plan_shards(asset, repo, shards, inventory)
        if not json_out:
            _print_plan(plan, False)
        _run_local_workers(context.config_path, name, plan["run"], shards)
        run = plan["run"]
    assert run is not None
    if not commit and shards is None:
        index = _shard_index(shard)
        limit = asset.timeout
        stop = (
            f"shard {index} of {name} stopped: it ran past its timeout of {format_duration(limit)}"
            if limit
            else ""
        )
        # stopped like a plain backup: no result, the rerun reuses what was uploaded
        with deadline(limit, stop), progress_bar(f"backup {name} shard {index}") as bar:
            result = sharding.run_shard(asset, repo, run, index, bar)
        _print_shard(name, run, result, json_out)
        return
    info = sharding.commit_run(asset, repo, run)
    audit.append(
        "backup", asset=name, snapshot=info.id, bytes=info.stats.bytes, added=info.stats.stored_bytes
    )
    # what each local worker ran (an exported Indexed Job's pods run the same)
    workers = {"args": worker_args(name, run), "env": ["JOB_COMPLETION_INDEX"]} if shards else None
    _print_snapshot(name, run, info, time.monotonic() - started, json_out, workers)


def _run_local_workers(config: Path, asset: str, run: str, shards: int) -> None:
    """N processes of `lifeboat backup ASSET --run RUN`, each told its shard the way
    Kubernetes tells a pod of an Indexed Job; a failed one is named with its error."""
    command = [sys.executable, "-P", "-m", "lifeboat", "--config", str(config), *worker_args(asset, run)]
    with tempfile.TemporaryDirectory(prefix="lifeboat-shards-") as tmp:
        procs = []
        for i in range(shards):
            err = open(Path(tmp) / f"{i}.err", "w+")  # noqa: SIM115 - closed below, after wait
            env = {**os.environ, "JOB_COMPLETION_INDEX": str(i)}
            procs.append((subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err), err))
        failed = []
        for i, (proc, err) in enumerate(procs):
            proc.wait()
            err.seek(0)
            error = child_error(err.read())
            err.close()
            if proc.returncode != 0:
                why = error or f"exit {proc.returncode}"
                failed.append(f"{i} ({why})")
    if failed:
        raise CheckFailed(
            f"run {run} of {asset}: shard(s) {', '.join(failed)} failed; nothing was committed",
            hint=f"rerun each with 'lifeboat backup {asset} --run {run} --shard I', then --commit",
        )


def _print_plan(plan: dict[str, Any], json_out: bool) -> None:
    parts = [{k: p[k] for k in ("index", "objects", "bytes")} for p in plan["parts"]]
    if json_out:
        print_json({k: plan[k] for k in ("asset", "run", "shards", "method", "created")} | {"parts": parts})
        return
    console.print(
        f"{plan['asset']}: planned run {plan['run']}: {plan['shards']} shards from the {plan['method']}"
    )
    for p in parts:
        console.print(f"  shard {p['index']}: {p['objects']} objects, {human_bytes(p['bytes'])}")
    console.print(plan["run"], markup=False)


def _print_shard(asset: str, run: str, result: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json({"asset": asset, "run": run} | {k: v for k, v in result.items() if k != "tree"})
        return
    s = result["stats"]
    again = " (already done: nothing to do)" if result.get("already_done") else ""
    console.print(
        f"{asset}: shard {result['index']} of run {run}{again}: {result['objects']} objects, "
        f"{result['downloaded']} downloaded, {human_bytes(s['new_bytes'])} new, "
        f"{result['vanished']} vanished since the plan"
    )


def _print_snapshot(
    asset: str, run: str, info: SnapshotInfo, seconds: float, json_out: bool, workers: dict[str, Any] | None
) -> None:
    if json_out:
        result = {
            "asset": asset,
            "ok": True,
            "run": run,
            "snapshot": info.id,
            "stats": info.stats,
            "labels": info.labels,
            "seconds": round(seconds, 3),
        }
        print_json([result | ({"workers": workers} if workers else {})])
        return
    s = info.stats
    console.print(
        f"{asset}: snapshot {info.short_id} of run {run} ({info.labels.get('shards')} shards), "
        f"{s.files} files, "
        f"{human_bytes(s.bytes)} ({human_bytes(s.new_bytes)} new, {human_bytes(s.stored_bytes)} stored)"
    )


def sharded_restore(
    ctx: typer.Context, spec: Any, shards: int, given: dict[str, Any], creds: list[str], json_out: bool
) -> None:
    """`restore ASSET --target T --shards N`: N processes of `restore ... --shards N --shard I`
    (the pods of a restore Indexed Job run the same), each restoring its part of one
    snapshot, resolved here so that a backup committed meanwhile cannot split the restore."""
    from lifeboat.assets.objects.restore import check_target_empty

    if given["in_place"] or given["dry_run"]:
        raise ConfigError("--shards restores into a --target: in-place restores and dry runs are not sharded")
    if not given["target"]:
        raise ConfigError("restore needs --target", hint="restores never write to the source by default")
    context = run_context(ctx)
    policy = context.policy()
    snapshot = given["snapshot"]
    if snapshot is None:
        repo = runtime.open_for_write(policy)  # snapshot headers need only the backup key
        snapshot = None if given["at"] else repo.find_snapshot(spec.name).id
    if not given["force"]:
        check_target_empty(spec, given["target"])
    args = restore_worker_args(spec.name, given["target"], shards, snapshot, given["at"])
    args += (["--force"] if given["force"] else []) + creds
    if context.repository:  # every worker reads from the copy the parent chose
        args += ["--repository", context.repository]
    started = time.monotonic()
    outputs = _run_restore_workers(context.config_path, args, shards)
    total = _sum_restores(spec.name, given["target"], outputs, shards, time.monotonic() - started)
    if json_out:
        print_json(total)
    else:
        for line in total["summary"]:
            console.print(line, soft_wrap=True, markup=False)
    if not total["ok"]:
        raise typer.Exit(1)


def _run_restore_workers(config: Path, args: list[str], shards: int) -> list[dict[str, Any]]:
    base = [sys.executable, "-P", "-m", "lifeboat", "--config", str(config), *args]
    with tempfile.TemporaryDirectory(prefix="lifeboat-restore-") as tmp:
        procs = []
        for i in range(shards):
            out = open(Path(tmp) / f"{i}.out", "w+")  # noqa: SIM115 - closed below, after wait
            err = open(Path(tmp) / f"{i}.err", "w+")  # noqa: SIM115
            procs.append((subprocess.Popen([*base, "--shard", str(i)], stdout=out, stderr=err), out, err))
        results = []
        for i, (proc, out, err) in enumerate(procs):
            proc.wait()
            out.seek(0)
            err.seek(0)
            text, errors = out.read(), err.read()
            out.close()
            err.close()
            try:
                result = json.loads(text) if text.strip() else None
            except ValueError:
                result = None
            if not isinstance(result, dict):
                why = child_error(errors) or f"exit {proc.returncode}"
                result = {"ok": False, "failed": [f"shard {i}: {why}"]}
            results.append(result)
    return results


def _sum_restores(
    asset: str, target: str, parts: list[dict[str, Any]], shards: int, seconds: float
) -> dict[str, Any]:
    counts = ("restored", "restored_bytes", "skipped", "from_snapshot", "from_versions")
    total: dict[str, Any] = {k: sum(int(p.get(k, 0)) for p in parts) for k in counts}
    snapshots = {p["snapshot"] for p in parts if p.get("snapshot")}
    total.update(
        ok=all(p.get("ok") for p in parts),
        asset=asset,
        target=target,
        snapshot=snapshots.pop() if len(snapshots) == 1 else None,
        shards=shards,
        failed=[f for p in parts for f in p.get("failed", [])],
        parts=[{k: p.get(k, 0) for k in ("restored", "restored_bytes", "skipped")} for p in parts],
        seconds=round(seconds, 3),
    )
    total["summary"] = [
        f"{asset}: {total['restored']} objects ({total['restored_bytes'] / 1e6:.1f} MB) restored into "
        f"{target} by {shards} processes in {seconds:.1f}s, {total['skipped']} already identical, "
        f"{len(total['failed'])} failed"
    ] + [f"  FAILED {f}" for f in total["failed"][:20]]
    return total
