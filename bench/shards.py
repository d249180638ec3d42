"""Benchmark: sharded object backups (`lifeboat backup ASSET --shards N`) of one bucket on a
real S3 server (SeaweedFS), with 1, 2 and 4 local shards planned by LIST and 4 planned from
an S3 Inventory CSV report; then a model for 10^9 objects on N pods.

    .venv/bin/python bench/shards.py [--objects 20000] [--size-mb N] [--repeat 1]

Not a test. Each row is the median of --repeat runs (default 1, to keep it short), each
into a fresh file:// repository. Request counts come from SeaweedFS's own Prometheus
counters, server CPU from /proc/<weed pid>/stat, client CPU from the reaped children's
rusage (lifeboat and its shard worker processes).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import boto3

from common import media_block, print_table, text_block
from seaweed import ADMIN, MeteredSeaweed

ROOT = Path(__file__).resolve().parent.parent
LIFEBOAT = str(ROOT / ".venv" / "bin" / "lifeboat")
BUCKET = "media"
INVENTORY_BUCKET = "media-inventory"
CSV_FIELDS = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag"
INVENTORY_FILES = 4
# AWS S3 Standard list prices (us-east-1)
LIST_PER_1000 = 0.005
GET_PER_1000 = 0.0004
INVENTORY_PER_MILLION = 0.0025
KEYS_PER_LIST = 1000
MODEL_OBJECTS = 10**9
MODEL_PODS = (10, 100, 1000)
PLAN_ROWS = 300_000  # rows of the large inventory report that measures a plan's per-row cost


@dataclass
class Measure:
    seconds: float
    server_cpu: float
    client_cpu: float
    lists: int
    gets: int
    output: str


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(server: MeteredSeaweed, argv: list[str]) -> Measure:
    before_req, before_cpu, before_client = server.requests(), server.cpu_seconds(), children_cpu()
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[3:])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    after = server.requests()
    return Measure(
        seconds,
        server.cpu_seconds() - before_cpu,
        children_cpu() - before_client,
        after.get("LIST", 0) - before_req.get("LIST", 0),
        after.get("GET", 0) - before_req.get("GET", 0),
        proc.stdout,
    )


def median(runs: list[Measure]) -> Measure:
    """The run of median wall time (its other columns are that run's)."""
    return sorted(runs, key=lambda m: m.seconds)[(len(runs) - 1) // 2]


def sizes(n: int, total: int, rng: random.Random) -> list[int]:
    raw = [rng.lognormvariate(10, 1.3) for _ in range(n)]
    scale = total / sum(raw)
    return [max(0, int(r * scale)) for r in raw]


def key_of(i: int, prefixes: int) -> str:
    return f"u{i % prefixes:04d}/{i:07d}.{'json' if i % 10 == 0 else 'jpg'}"


def fill(s3: Any, n: int, total: int) -> None:
    """n media-like objects (mostly incompressible, every 10th text/JSON) of a long-tailed
    size mix over n/40 user prefixes."""
    plan = sizes(n, total, random.Random(3))
    prefixes = max(10, n // 40)

    def put(i: int) -> None:
        rng = random.Random(i)
        data = text_block(rng, plan[i]) if i % 10 == 0 else media_block(rng, plan[i])
        s3.put_object(Bucket=BUCKET, Key=key_of(i, prefixes), Body=data)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(n)))


def list_bucket(s3: Any) -> tuple[list[dict[str, Any]], int]:
    """Every version of the bucket, and how many LIST pages that took."""
    rows: list[dict[str, Any]] = []
    pages = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET):
        pages += 1
        rows += [{**v, "IsDeleteMarker": False} for v in page.get("Versions", [])]
        rows += [{**d, "IsDeleteMarker": True} for d in page.get("DeleteMarkers", [])]
    return rows, pages


def write_inventory(s3: Any, rows: list[dict[str, Any]], config_id: str = "all") -> str:
    """An S3 Inventory report (AWS's CSV layout: gzipped data files and a manifest.json);
    the prefix of its configuration, from which lifeboat takes the newest report."""
    config = f"inventory/{BUCKET}/{config_id}"
    base = f"{config}/{datetime.now(UTC):%Y-%m-%dT%H-%MZ}"
    random.Random(7).shuffle(rows)  # report files are not sorted by key
    entries = []
    for part in range(INVENTORY_FILES):
        text = io.StringIO()
        writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for r in rows[part::INVENTORY_FILES]:
            writer.writerow(
                [
                    BUCKET,
                    urllib.parse.quote_plus(r["Key"], safe="/"),
                    r["VersionId"],
                    str(r["IsLatest"]).lower(),
                    str(r["IsDeleteMarker"]).lower(),
                    "" if r["IsDeleteMarker"] else str(r["Size"]),
                    r["LastModified"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    r.get("ETag", "").strip('"'),
                ]
            )
        data = gzip.compress(text.getvalue().encode())
        name = f"{base}/data/part-{part}.csv.gz"
        s3.put_object(Bucket=INVENTORY_BUCKET, Key=name, Body=data)
        entries.append({"key": name, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()})
    manifest = {
        "sourceBucket": BUCKET,
        "destinationBucket": f"arn:aws:s3:::{INVENTORY_BUCKET}",
        "version": "2016-11-30",
        "creationTimestamp": str(int(datetime.now(UTC).timestamp() * 1000)),
        "fileFormat": "CSV",
        "fileSchema": CSV_FIELDS,
        "files": entries,
    }
    s3.put_object(Bucket=INVENTORY_BUCKET, Key=f"{base}/manifest.json", Body=json.dumps(manifest).encode())
    return f"s3://{INVENTORY_BUCKET}/{config}/"


def policy(work: Path, name: str, endpoint: str, workers: int) -> Path:
    path = work / f"{name}.toml"
    path.write_text(f"""
[repository]
url = "file://{work / name}"
keyfile = "{work / name}-backup.key"
recovery_key = "{work / name}-recovery.key"
[deployment]
mode = "development"
[classes.c]
rpo = "1h"
rto = "1h"
[assets.media]
kind = "objects"
class = "c"
source = "s3://{BUCKET}/"
endpoint_url = "{endpoint}"
allow_insecure_http = true
workers = {workers}
""")
    return path


def fresh_policy(work: Path, name: str, endpoint: str, workers: int) -> Path:
    for stale in work.glob(f"{name}*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    path = policy(work, name, endpoint, workers)
    subprocess.run([LIFEBOAT, "-c", str(path), "init"], check=True, capture_output=True)
    return path


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"


def print_model(
    one_shard_rate: float,
    gets_per_object: float,
    list_seconds: float,
    inv_seconds: float,
    lists_per_object: float,
) -> None:
    """Wall time and request cost of a 10^9-object bucket on N pods, from the measured
    per-object costs; the assumptions are printed with it."""
    n = MODEL_OBJECTS
    lists = n / KEYS_PER_LIST
    assumptions = [
        "the endpoint scales linearly with pods (each pod gets what one shard got here)",
        f"each pod backs up {one_shard_rate:.0f} objects/s: the measured 1-shard rate,"
        " process start included",
        f"LIST: {KEYS_PER_LIST} keys per request, ${LIST_PER_1000} per 1,000,"
        f" {list_seconds * 1000:.1f} ms each (measured);"
        " LIST-planned shards list their own prefixes, so LIST time divides by N",
        f"inventory: ${INVENTORY_PER_MILLION} per million objects; the plan reads every row in one"
        f" process, at the measured {inv_seconds * 1e6:.0f} s per million rows (does not divide by N;"
        " it also holds every row in memory)",
        f"GET/HEAD: ${GET_PER_1000} per 1,000, {gets_per_object:.2f} per object (measured);"
        " repository writes and storage not included",
        f"LIST $ assumes full 1,000-key pages; lifeboat's LIST-planned backup here made"
        f" {lists_per_object:.3f} LISTs per object (prefixes of ~40 keys), which at 10^9 objects"
        f" would be ${n * lists_per_object * LIST_PER_1000 / 1000:,.0f}",
    ]
    print(f"\nmodel: {n:.0e} objects on N pods; assumptions:")
    for line in assumptions:
        print(f"  - {line}")
    rows = []
    for pods in MODEL_PODS:
        rows.append(
            [
                str(pods),
                hours(n / (one_shard_rate * pods)),
                hours(lists * list_seconds / pods),
                hours(n * inv_seconds),
                f"${lists * LIST_PER_1000 / 1000:,.2f}",
                f"${n / 1e6 * INVENTORY_PER_MILLION:,.2f}",
                f"${n * gets_per_object * GET_PER_1000 / 1000:,.2f}",
            ]
        )
    print_table(
        ["pods", "backup wall", "LIST time", "inventory plan", "LIST $", "inventory $", "GET $"], rows
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--size-mb", type=int, help="total bytes (default ~1 GB per 20,000 objects)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row, median reported")
    parser.add_argument("--workers", type=int, default=16, help="transfer threads per shard process")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "shards")
    args = parser.parse_args()
    size_mb = args.size_mb or max(1, round(1000 * args.objects / 20_000))
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ.update(
        AWS_ACCESS_KEY_ID=ADMIN.access_key,
        AWS_SECRET_ACCESS_KEY=ADMIN.secret_key,
        AWS_DEFAULT_REGION="us-east-1",
    )
    server = MeteredSeaweed(work / "seaweed")
    with server:
        s3 = boto3.client("s3", endpoint_url=server.endpoint)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        print(f"uploading {args.objects} objects ({size_mb} MB) to SeaweedFS ...", flush=True)
        fill(s3, args.objects, size_mb << 20)
        before = server.requests()
        started = time.monotonic()
        rows, pages = list_bucket(s3)
        list_all = time.monotonic() - started
        list_requests = server.requests().get("LIST", 0) - before.get("LIST", 0)
        s3.create_bucket(Bucket=INVENTORY_BUCKET)
        inventory = write_inventory(s3, rows)
        # the same report with no rows: planning from it is the fixed cost of a plan; and a
        # large one (rows for keys that need not exist: a plan reads no object), so the
        # per-row cost of a plan stands out of the noise
        empty_inventory = write_inventory(s3, [], "empty")
        copies = -(-PLAN_ROWS // len(rows))
        big_inventory = write_inventory(
            s3, [{**r, "Key": f"{r['Key']}.{j}"} for j in range(copies) for r in rows], "large"
        )
        print(f"whole-bucket LIST by one client: {list_all:.2f} s, {list_requests} requests ({pages} pages)")

        def backup(shards: int, inv: bool) -> Measure:
            runs = []
            for _ in range(args.repeat):
                path = fresh_policy(work, "repo", server.endpoint, args.workers)
                extra = ["--inventory", inventory] if inv else []
                runs.append(
                    measured(
                        server,
                        [LIFEBOAT, "-c", str(path), "backup", "media", "--shards", str(shards), *extra],
                    )
                )
            return median(runs)

        def plan(inv: str | None) -> Measure:
            path = fresh_policy(work, "plan", server.endpoint, args.workers)
            extra = ["--inventory", inv] if inv else []
            return median(
                [
                    measured(
                        server, [LIFEBOAT, "-c", str(path), "backup", "media", "--plan-shards", "4", *extra]
                    )
                    for _ in range(max(3, args.repeat))  # short and noisy: always 3 or more
                ]
            )

        results = []
        for shards, inv in ((1, False), (2, False), (4, False), (4, True)):
            print(f"backup --shards {shards}{' --inventory' if inv else ''} ...", flush=True)
            results.append((shards, inv, backup(shards, inv)))
        plans = {
            "LIST": plan(None),
            "inventory": plan(inventory),
            "empty inventory": plan(empty_inventory),
            f"inventory of {copies * len(rows)} rows": plan(big_inventory),
        }
    base = results[0][2].seconds
    print(
        f"\n{args.objects} objects, {size_mb} MB; median of {args.repeat} run(s) per row;"
        f" {os.cpu_count()} cores shared by client and server"
    )
    print_table(
        [
            "shards",
            "plan",
            "wall s",
            "objects/s",
            "speed-up",
            "server CPU s",
            "client CPU s",
            "cores busy",
            "LIST",
            "GET/HEAD",
        ],
        [
            [
                str(shards),
                "inventory" if inv else "LIST",
                f"{m.seconds:.1f}",
                f"{args.objects / m.seconds:.0f}",
                f"{base / m.seconds:.2f}x",
                f"{m.server_cpu:.1f}",
                f"{m.client_cpu:.1f}",
                f"{(m.server_cpu + m.client_cpu) / m.seconds:.2f}",
                str(m.lists),
                str(m.gets),
            ]
            for shards, inv, m in results
        ],
    )
    print(
        "\nlisting cost (lifeboat backup media --plan-shards 4, median of 3 or more;"
        " the empty report gives a plan's fixed cost):"
    )
    print_table(
        ["plan", "wall s", "LIST", "GET/HEAD"],
        [[name, f"{m.seconds:.2f}", str(m.lists), str(m.gets)] for name, m in plans.items()],
    )
    one = results[0][2]
    inv_run = results[3][2]
    print_model(
        args.objects / one.seconds,
        inv_run.gets / args.objects,
        list_all / max(1, list_requests),
        max(0.0, plans[f"inventory of {copies * len(rows)} rows"].seconds - plans["empty inventory"].seconds)
        / (copies * len(rows)),
        one.lists / args.objects,
    )


if __name__ == "__main__":
    main()
