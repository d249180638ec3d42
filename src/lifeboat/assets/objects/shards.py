"""Sharded backups of one bucket: plan, back up each shard (any machine, any order, again
after a crash), then commit one snapshot of the whole bucket.

The plan splits the bucket either by key ranges of an S3 Inventory report (no LIST at all)
or, without one, by prefixes found with delimiter listings. Shards share nothing but the
repository: each stores its objects and its part of the tree, then writes its result
record last; the commit joins the parts into one snapshot once every shard has a result.
"""

from __future__ import annotations

import bisect
import secrets
import socket
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from lifeboat import clock
from lifeboat.assets.objects.backup import object_meta
from lifeboat.assets.objects.info import ObjectInfo
from lifeboat.assets.objects.inventory import Inventory, live_rows, read_file, read_manifest
from lifeboat.assets.objects.s3source import S3Source
from lifeboat.assets.objects.source import source_for
from lifeboat.assets.objects.transfer import Counters, SizedReads, run_batched, transfer_workers, with_retries
from lifeboat.errors import CheckFailed, ConfigError, NotFoundError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo import BackupSession, Repository, SnapshotInfo
from lifeboat.repo import shards as records
from lifeboat.repo.model import DATA_AS_OF

if TYPE_CHECKING:
    from lifeboat.assets.objects.model import ObjectsAsset

# What one object costs beyond its bytes (a GET, a tree entry), in bytes, for balancing:
# a shard of many tiny objects takes as long as one of fewer large ones.
OBJECT_WEIGHT = 64 << 10
PEEK = 1000  # keys sampled to estimate a prefix the planner did not list
LISTING_BUDGET = 64  # delimiter listings of a plan, plus 16 per shard


@dataclass
class ShardCounters(Counters):
    """Per-shard transfer counters, reported in the shard's result record."""

    current_instead: int = 0  # the listed version was gone; the current one was read


def worker_args(asset: str, run: str) -> list[str]:
    """What one shard worker runs after `lifeboat --config FILE`: here in a local process,
    in Kubernetes in each pod of the Indexed Job (the shard from JOB_COMPLETION_INDEX)."""
    return ["backup", asset, "--run", run, "--json"]


def restore_worker_args(
    asset: str, target: str, shards: int, snapshot: str | None, at: str | None
) -> list[str]:
    """A restore worker's arguments but its `--shard I` (last, so that an Indexed Job can
    append `$(JOB_COMPLETION_INDEX)`)."""
    point = ["--snapshot", snapshot] if snapshot else ["--at", at] if at else []
    return ["restore", asset, "--target", target, *point, "--shards", str(shards), "--json"]


def new_run_id() -> str:
    """A fresh id for one sharded backup run."""
    return f"{clock.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _source(asset: ObjectsAsset) -> S3Source:
    source = source_for(asset)
    if not isinstance(source, S3Source):
        raise ConfigError(
            f"asset {asset.name}: sharded backups need an s3:// source",
            hint="back up a directory with a plain 'lifeboat backup'",
        )
    return source


def cuts(weights: list[int], shards: int) -> list[int]:
    """Start index of each of ``shards`` contiguous parts of about equal total weight."""
    prefix = [0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    total = prefix[-1]
    starts = [0] + [bisect.bisect_left(prefix, total * j / shards) for j in range(1, shards)]
    return [min(max(s, starts[i - 1] if i else 0), len(weights)) for i, s in enumerate(starts)]


def _plan_inventory(source: S3Source, url: str, shards: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    inventory = read_manifest(source, url)
    rows: list[tuple[str, int]] = []
    spans: list[tuple[int, str, str]] = []  # file index, its smallest and largest live key
    for i, entry in enumerate(inventory.files):
        keys = [(r.key, r.size) for r in live_rows(read_file(source, inventory, entry), source.prefix)]
        if keys:
            spans.append((i, min(k for k, _ in keys), max(k for k, _ in keys)))
        rows += keys
    rows.sort()
    starts = cuts([size + OBJECT_WEIGHT for _, size in rows], shards)
    parts = []
    for j, start in enumerate(starts):
        end = starts[j + 1] if j + 1 < shards else len(rows)
        lo = "" if j == 0 else rows[start][0] if start < len(rows) else "\U0010ffff"
        hi = None if j + 1 == shards else rows[end][0] if end < len(rows) else "\U0010ffff"
        files = [i for i, first, last in spans if last >= lo and (hi is None or first < hi)]
        part = rows[start:end]
        parts.append(
            {
                "index": j,
                "lo": lo,
                "hi": hi,
                "files": files,
                "objects": len(part),
                "bytes": sum(s for _, s in part),
            }
        )
    extra = {
        "method": "inventory",
        "inventory": {
            "url": url,
            "bucket": inventory.bucket,
            "source_bucket": inventory.source_bucket,
            "format": inventory.file_format,
            "fields": inventory.fields,
            "created": inventory.created.isoformat(),
            "files": inventory.files,
        },
    }
    return parts, extra


def _weight(unit: tuple[str, str, int, int]) -> int:
    return unit[3] + unit[2] * OBJECT_WEIGHT


def _plan_listing(source: S3Source, shards: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Units of work from delimiter listings, breadth first: ("level", P) is the objects
    directly under P (listed, so exact), ("tree", P) everything under P, for the prefixes
    left when the listing budget is spent (estimated from their first PEEK keys)."""
    units: list[tuple[str, str, int, int]] = []  # kind, prefix, objects, bytes
    queue, left = deque([""]), LISTING_BUDGET + 16 * shards
    while queue and left > 0:
        rel = queue.popleft()
        objects, prefixes = source.list_level(rel)
        left -= 1
        if objects:
            units.append(("level", rel, len(objects), sum(o.size for o in objects)))
        queue.extend(prefixes)
    for rel in queue:
        sample, _ = source.list_tree(rel, PEEK)
        if sample:
            units.append(("tree", rel, len(sample), sum(o.size for o in sample)))
    loads = [0] * shards
    assigned: list[list[tuple[str, str, int, int]]] = [[] for _ in range(shards)]
    # largest first onto the least loaded shard: deterministic for one listing
    for unit in sorted(units, key=lambda u: (-_weight(u), u[1], u[0])):
        j = loads.index(min(loads))
        loads[j] += _weight(unit)
        assigned[j].append(unit)
    parts = [
        {
            "index": j,
            "units": [[kind, prefix] for kind, prefix, _, _ in sorted(us, key=lambda u: u[1])],
            "objects": sum(u[2] for u in us),
            "bytes": sum(u[3] for u in us),
        }
        for j, us in enumerate(assigned)
    ]
    return parts, {"method": "listing"}


def plan_shards(
    asset: ObjectsAsset, repo: Repository, shards: int, inventory: str | None = None, run: str | None = None
) -> dict[str, Any]:
    """Split the source into N shards of similar size (from a listing or an inventory) and record the plan."""
    if shards < 1:
        raise ConfigError("--plan-shards needs at least 1 shard")
    run = records.check_run_id(run or new_run_id())
    inventory = inventory or getattr(asset, "inventory", None)
    source = _source(asset)
    counters = Counters()
    if inventory:
        parts, extra = with_retries(
            "reading the inventory", lambda: _plan_inventory(source, inventory, shards), counters
        )
    else:
        parts, extra = with_retries("listing prefixes", lambda: _plan_listing(source, shards), counters)
    plan = {
        "run": run,
        "asset": asset.name,
        "source": asset.source,
        "shards": shards,
        "created": clock.now().isoformat(),
        **extra,
        "parts": parts,
    }
    records.put_plan(repo, asset.name, run, plan)
    return plan


def _inventory_of(plan: dict[str, Any]) -> Inventory:
    from datetime import datetime

    inv = plan["inventory"]
    return Inventory(
        inv["url"],
        inv["bucket"],
        inv["source_bucket"],
        inv["format"],
        list(inv["fields"]),
        datetime.fromisoformat(inv["created"]),
        list(inv["files"]),
    )


def shard_objects(source: S3Source, plan: dict[str, Any], part: dict[str, Any]) -> list[ObjectInfo]:
    """The objects shard ``part`` backs up: the inventory's versions in its key range, or
    what its prefixes hold now."""
    if plan["method"] == "inventory":
        inventory = _inventory_of(plan)
        lo, hi = part["lo"], part["hi"]
        out = []
        for i in part["files"]:
            for r in live_rows(read_file(source, inventory, inventory.files[i]), source.prefix):
                if r.key >= lo and (hi is None or r.key < hi):
                    out.append(ObjectInfo(r.key, r.size, r.etag.strip('"'), r.last_modified, r.version_id))
        return sorted(out, key=lambda o: o.key)
    objects: list[ObjectInfo] = []
    for kind, prefix in part["units"]:
        objects += source.list_level(prefix)[0] if kind == "level" else source.list_tree(prefix)[0]
    return objects


def _capture(session: BackupSession, source: S3Source, obj: ObjectInfo, counters: ShardCounters) -> None:
    def opened() -> Any:
        try:
            return source.open_with_info(obj)
        except NotFoundError:
            if obj.version_id is None:
                return None
        try:  # the inventory's version was removed since: the current one is what exists
            found = source.open_with_info(replace(obj, version_id=None))
            counters.add(current_instead=1)
            return found
        except NotFoundError:
            return None

    def download() -> None:
        got = opened()
        if got is None:
            counters.add(vanished=1)
            return
        body, info = got
        stream = SizedReads(body, info.size)
        try:
            entry = session.read_stream(
                obj.key,
                stream,  # type: ignore[arg-type]
                mtime_ns=int(info.last_modified.timestamp() * 1e9),
                meta=object_meta(info),  # with the version this shard actually read
            )
        finally:
            stream.close()
        if entry.size != info.size:
            raise ValueError("short read")  # retried before it is recorded: one entry a key
        session.add_entry(entry)
        counters.add(downloaded=1, bytes_downloaded=entry.size)

    with_retries(f"downloading {obj.key}", download, counters)


def _same_source(plan: dict[str, Any], asset: ObjectsAsset) -> None:
    if plan["source"] != asset.source:
        raise ConfigError(
            f"run {plan['run']} was planned for {plan['source']}, "
            f"but {asset.name} now backs up {asset.source}",
            hint="plan a new run",
        )


def _part(plan: dict[str, Any], index: int) -> dict[str, Any]:
    if not 0 <= index < int(plan["shards"]):
        raise ConfigError(
            f"shard {index} is not part of run {plan['run']}",
            hint=f"shards are 0 to {int(plan['shards']) - 1}",
        )
    return dict(plan["parts"][index])


def run_shard(
    asset: ObjectsAsset, repo: Repository, run: str, index: int, progress: ProgressSink = NO_PROGRESS
) -> dict[str, Any]:
    """Back up one shard; a shard that already has a result is not run again."""
    plan = records.get_plan(repo, asset.name, run)
    _same_source(plan, asset)
    part = _part(plan, index)
    done = records.get_result(repo, asset.name, run, index)
    if done is not None:
        return {**done, "already_done": True}
    source = _source(asset)
    counters = ShardCounters()
    objects = with_retries("listing the shard", lambda: shard_objects(source, plan, part), counters)
    counters.objects = len(objects)
    progress.start(sum(o.size for o in objects))
    with repo.backup(asset.name, "objects", progress=progress, use_parent_cache=False) as session:
        run_batched(
            lambda o: _capture(session, source, o, counters), objects, transfer_workers(source, asset)
        )
        tree, stats, packs = session.finish_fragment()
    result = {
        "index": index,
        "tree": tree,
        "packs": packs,  # the commit extends their Object Lock retention
        "stats": asdict(stats),
        "host": socket.gethostname(),
        "finished": clock.now().isoformat(),
        **{k: getattr(counters, k) for k in COUNTERS},
    }
    # the last write of a shard: a crash before it leaves no result, and the rerun redoes it
    return {**records.put_result(repo, asset.name, run, index, result), "already_done": False}


COUNTERS = ("objects", "downloaded", "bytes_downloaded", "retries", "vanished", "current_instead")


def missing_shards(repo: Repository, asset: str, run: str) -> list[int]:
    """Shards of a run that have no result record yet."""
    plan = records.get_plan(repo, asset, run)
    done = records.done_shards(repo, asset, run)
    return [i for i in range(int(plan["shards"])) if i not in done]


def commit_run(asset: ObjectsAsset, repo: Repository, run: str) -> SnapshotInfo:
    """Publish the run's one snapshot; again for a committed run returns the same one."""
    plan = records.get_plan(repo, asset.name, run)
    _same_source(plan, asset)
    committed = records.get_commit(repo, asset.name, run)
    if committed is not None:
        return repo.find_snapshot(asset.name, snapshot_id=committed)
    missing = missing_shards(repo, asset.name, run)
    if missing:
        raise CheckFailed(
            f"run {run} of {asset.name} is not complete: shard(s) {', '.join(map(str, missing))} "
            f"of {plan['shards']} have no result",
            hint=f"run them again: lifeboat backup {asset.name} --run {run} --shard I",
        )
    results = []
    for i in range(int(plan["shards"])):
        result = records.get_result(repo, asset.name, run, i)
        assert result is not None  # listed as done just above; results are never deleted
        results.append(result)
    labels = {
        "source": asset.source,
        "versioning": with_retries("reading versioning", _source(asset).versioning, Counters()),
        "run": run,
        "shards": str(plan["shards"]),
        "plan": plan["method"],
        **{k: str(sum(int(r[k]) for r in results)) for k in COUNTERS},
    }
    if plan["method"] == "inventory":
        labels["inventory_date"] = plan["inventory"]["created"]
    # what the snapshot holds is the bucket as listed (or as the inventory saw it), not as
    # it stood at the commit, hours later: status counts exposure from here
    labels[DATA_AS_OF] = labels.get("inventory_date") or plan["created"]
    info = records.commit_shards(repo, asset.name, "objects", results, labels)
    records.put_commit(repo, asset.name, run, info.id)
    return info
