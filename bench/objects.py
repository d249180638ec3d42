"""Benchmark: lifeboat backing up a bucket on a real S3 server (SeaweedFS, bench/seaweed.py)
vs restic backing up the same objects mirrored in a directory, vs the endpoint floor (the
same requests from the thinnest client, bench/s3_floor.py: the AWS Common Runtime's client
for GETs and PUTs, and for reference the urllib3 client that was the floor before); then a full
restore (lifeboat into a fresh bucket, restic into a directory); then a second backup
after a fresh 2% of the objects changed.

    .venv/bin/python bench/objects.py [--objects 20000] [--size-gb 1.0] [--runs 3]

Not a test. Each run uses fresh repositories; rows are the median (min-max) of ``--runs``,
the tools side by side within each run. The server's CPU is reported separately: on a
2-core machine the endpoint competes with the client for the same cores. The media mix is
realistic: mostly incompressible JPEG/MP4 bodies (real file headers, random payloads) with
a long tail of sizes, every 10th object text/JSON.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import boto3

from common import Results, apt_install, du, machine, media_file, spread, text_block, timed
from seaweed import ADMIN, MeteredSeaweed

ROOT = Path(__file__).resolve().parent.parent
LIFEBOAT = str(ROOT / ".venv" / "bin" / "lifeboat")
FLOOR = [sys.executable, str(Path(__file__).resolve().parent / "s3_floor.py")]
BUCKET = "media"


def sizes(n: int, total: int, rng: random.Random) -> list[int]:
    raw = [rng.lognormvariate(10, 1.3) for _ in range(n)]
    scale = total / sum(raw)
    return [max(0, int(r * scale)) for r in raw]


def key_of(i: int) -> str:
    ext = "json" if i % 10 == 0 else "mp4" if i % 10 == 1 else "jpg"
    return f"u{i % 500:03d}/{i:06d}.{ext}"


def body(i: int, size: int, seed: int = 0) -> bytes:
    """Object ``i``'s content; another ``seed`` gives it new content (a changed object)."""
    rng = random.Random(i * 1000 + seed)
    ext = key_of(i).rsplit(".", 1)[1]
    return text_block(rng, size) if ext == "json" else media_file(rng, size, ext)


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    server: MeteredSeaweed
    s3: Any
    plan: list[int]
    restic: str

    @property
    def mirror(self) -> Path:
        return self.work / "mirror"

    def put(self, i: int, seed: int = 0) -> int:
        """Object ``i`` into the bucket and the mirror; its incompressible bytes."""
        data = body(i, self.plan[i], seed)
        self.s3.put_object(Bucket=BUCKET, Key=key_of(i), Body=data)
        path = self.mirror / key_of(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return 0 if key_of(i).endswith(".json") else len(data)

    def fill(self) -> None:
        self.s3.create_bucket(Bucket=BUCKET)
        self.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(self.put, range(self.args.objects)))

    def policies(self) -> tuple[Path, Path]:
        """Fresh repositories: one for the bucket, one for the directory mirror (the
        directory rows must not dedup against the bucket's snapshot)."""
        for stale in ("lifeboat-repo", "lifeboat-dir-repo", "restic-repo", "restic-cache", ".lifeboat"):
            shutil.rmtree(self.work / stale, ignore_errors=True)
        head = '[deployment]\nmode = "development"\n[classes.c]\nrpo = "1h"\nrto = "1h"\n'
        bucket = self.work / "lifeboat.toml"
        bucket.write_text(f"""{head}
[repository]
url = "file://{self.work / "lifeboat-repo"}"
keyfile = "{self.work / "backup.key"}"
recovery_key = "{self.work / "recovery.key"}"
[assets.media]
kind = "objects"
class = "c"
source = "s3://{BUCKET}/"
endpoint_url = "{self.server.endpoint}"
allow_insecure_http = true
workers = {self.args.workers}
""")
        directory = self.work / "lifeboat-dir.toml"
        directory.write_text(f"""{head}
[repository]
url = "file://{self.work / "lifeboat-dir-repo"}"
keyfile = "{self.work / "dir-backup.key"}"
recovery_key = "{self.work / "dir-recovery.key"}"
[assets.mirror]
kind = "objects"
class = "c"
source = "dir://{self.mirror}"
""")
        for key in ("backup.key", "recovery.key", "dir-backup.key", "dir-recovery.key"):
            (self.work / key).unlink(missing_ok=True)
        for policy in (bucket, directory):
            timed("lifeboat init", [LIFEBOAT, "-c", str(policy), "init"])
        timed("restic init", [self.restic, "init"], env=self.restic_env())
        return bucket, directory

    def restic_env(self) -> dict[str, str]:
        return {
            "RESTIC_PASSWORD": "bench",
            "RESTIC_REPOSITORY": str(self.work / "restic-repo"),
            "RESTIC_CACHE_DIR": str(self.work / "restic-cache"),
        }

    def empty_bucket(self, bucket: str) -> None:
        """Delete a scratch bucket and every version in it (keeps the server's disk small)."""
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            doomed = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if doomed:
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
        self.s3.delete_bucket(Bucket=bucket)

    def count(self, bucket: str) -> tuple[int, int]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        found = [o["Size"] for page in pages for o in page.get("Contents", [])]
        return len(found), sum(found)

    def run(self, k: int, results: Results) -> tuple[int, int]:
        """One run of every row; what its 2% change wrote (bytes, incompressible bytes)."""
        bucket_policy, dir_policy = self.policies()
        lb, lb_dir = [LIFEBOAT, "-c", str(bucket_policy)], [LIFEBOAT, "-c", str(dir_policy)]
        env, server, endpoint = self.restic_env(), self.server, self.server.endpoint
        n, total = self.args.objects, sum(self.plan)

        results.add("backup", "lifeboat", timed("lb backup", [*lb, "backup", "media"], server=server))
        results.add("backup", "lifeboat-dir", timed("lb backup dir", [*lb_dir, "backup", "mirror"]))
        restic_backup = [self.restic, "backup", "-q", str(self.mirror)]
        results.add("backup", "restic", timed("restic backup", restic_backup, env=env))
        floor_get = [*FLOOR, "get", endpoint, BUCKET, "--workers", str(self.args.workers)]
        results.add("backup", "floor", timed("floor: LIST + GET all", floor_get, server=server))
        # the floor before lifeboat's GETs went through the runtime: presigned URLs, urllib3
        urllib3_get = [*floor_get, "--client", "urllib3"]
        results.add(
            "backup", "floor-urllib3", timed("urllib3 floor: LIST + GET all", urllib3_get, server=server)
        )

        restored, floored, floored_urllib3 = f"restored-{k}", f"floor-{k}", f"floor-urllib3-{k}"
        for bucket in (restored, floored, floored_urllib3):
            self.s3.create_bucket(Bucket=bucket)
        lb_restore = [*lb, "restore", "media", "--target", f"s3://{restored}/"]
        results.add("restore", "lifeboat", timed("lb restore", lb_restore, server=server))
        lb_dir_restore = [*lb_dir, "restore", "mirror", "--target", f"dir://{self.work / 'lb-out'}"]
        results.add("restore", "lifeboat-dir", timed("lb restore dir", lb_dir_restore))
        restic_restore = [self.restic, "restore", "latest", "-q", "--target", str(self.work / "restic-out")]
        results.add("restore", "restic", timed("restic restore", restic_restore, env=env))
        floor_put = [*FLOOR, "put", endpoint, floored, str(self.mirror), "--workers", str(self.args.workers)]
        results.add("restore", "floor", timed("floor: PUT all", floor_put, server=server))
        # the floor before lifeboat's small PUTs went through the runtime
        urllib3_put = [*FLOOR, "put", endpoint, floored_urllib3, str(self.mirror), "--client", "urllib3"]
        urllib3_put += ["--workers", str(self.args.workers)]
        results.add("restore", "floor-urllib3", timed("urllib3 floor: PUT all", urllib3_put, server=server))
        for what, (count, size) in (
            (f"bucket {restored}", self.count(restored)),
            ("lifeboat's directory", (-1, du(self.work / "lb-out"))),
            ("restic's directory", (-1, du(self.work / "restic-out"))),
        ):
            if size != total or count not in (-1, n):
                raise SystemExit(f"{what}: restored {count} objects, {size} bytes of {n}, {total}")
        for bucket in (restored, floored, floored_urllib3):
            self.empty_bucket(bucket)
        for d in ("lb-out", "restic-out"):
            shutil.rmtree(self.work / d)

        changed, written, incompressible = self.change(seed=1000 + k)
        before = {
            "lifeboat": du(self.work / "lifeboat-repo"),
            "lifeboat-dir": du(self.work / "lifeboat-dir-repo"),
        }
        before["restic"] = du(self.work / "restic-repo")
        second = timed("lb backup 2", [*lb, "backup", "media"], server=server)
        results.add("second", "lifeboat", second, du(self.work / "lifeboat-repo") - before["lifeboat"])
        second = timed("lb backup dir 2", [*lb_dir, "backup", "mirror"])
        results.add(
            "second", "lifeboat-dir", second, du(self.work / "lifeboat-dir-repo") - before["lifeboat-dir"]
        )
        second = timed("restic backup 2", restic_backup, env=env)
        results.add("second", "restic", second, du(self.work / "restic-repo") - before["restic"])
        floor_changed = [*floor_get, "--only", str(changed)]
        results.add("second", "floor", timed("floor: LIST + GET changed", floor_changed, server=server))
        for tool in ("lifeboat", "lifeboat-dir", "restic"):
            stored = results.cells[("second", tool)].stored[-1]
            if stored < 0.5 * incompressible or stored > 0.5 * total:
                raise SystemExit(
                    f"{tool}'s second backup stored {stored / 1e6:.1f} MB after {written / 1e6:.1f} MB"
                    f" ({incompressible / 1e6:.1f} MB incompressible) changed"
                )
        return written, incompressible

    def change(self, seed: int) -> tuple[Path, int, int]:
        """New content for 2% of the objects, chosen and written from ``seed`` (fresh each
        run); the file of their keys (for the floor) and the bytes written."""
        n = self.args.objects
        picked = random.Random(seed).sample(range(n), max(1, n // 50))
        keys = self.work / "changed-keys"
        keys.write_text("".join(f"{key_of(i)}\n" for i in picked))
        with ThreadPoolExecutor(16) as pool:
            incompressible = sum(pool.map(lambda i: self.put(i, seed), picked))
        return keys, sum(self.plan[i] for i in picked), incompressible


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3, help="runs per row; medians and ranges printed")
    parser.add_argument("--workers", type=int, default=32, help="transfer threads (lifeboat and the floor)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "objects")
    args = parser.parse_args()
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    restic = apt_install("restic", "restic")
    os.environ.update(
        AWS_ACCESS_KEY_ID=ADMIN.access_key,
        AWS_SECRET_ACCESS_KEY=ADMIN.secret_key,
        AWS_DEFAULT_REGION="us-east-1",
    )
    plan = sizes(args.objects, int(args.size_gb * (1 << 30)), random.Random(3))
    total = sum(plan)
    results = Results()
    changes = []
    with MeteredSeaweed(work / "seaweed") as server:
        bench = Bench(args, work, server, boto3.client("s3", endpoint_url=server.endpoint), plan, restic)
        print(
            f"uploading {args.objects} objects ({total / 1e6:.0f} MB) to SeaweedFS and the mirror ...",
            flush=True,
        )
        bench.fill()
        for k in range(1, args.runs + 1):
            print(f"run {k} of {args.runs}", flush=True)
            changes.append(bench.run(k, results))
    written = statistics.median(c[0] for c in changes)
    print(
        f"\n{args.objects} objects, {total / 1e6:.0f} MB in a SeaweedFS bucket;"
        f" {args.workers} transfer threads;"
        f" median (min-max) of {args.runs} run(s); second backup after {args.objects // 50} objects"
        f" ({written / 1e6:.0f} MB) got new content, new each run; MB/s over the whole bucket;"
        f" {machine()} at the end, shared by client and server"
    )
    results.print_table(lambda phase: total, count=args.objects)
    for phase in ("backup", "restore", "second"):
        dir_ratio = spread(results.speed_ratio(phase, "lifeboat-dir", "restic"), ".2f")
        of_floor = spread([100 * r for r in results.speed_ratio(phase, "lifeboat", "floor")], ".0f")
        print(
            f"{phase}: lifeboat (bucket) at {of_floor}% of the endpoint floor's speed,"
            f" {spread(results.speed_ratio(phase, 'lifeboat', 'restic'), '.2f')}x restic;"
            f" lifeboat (directory) {dir_ratio}x restic;"
            f" the floor is {spread(results.speed_ratio(phase, 'floor', 'restic'), '.2f')}x restic"
        )
        cpu_floor = spread([100 * r for r in results.cpu_ratio(phase, "lifeboat", "floor")], ".0f")
        cpu_restic = spread(results.cpu_ratio(phase, "lifeboat", "restic"), ".2f")
        print(
            f"  by CPU (client + server, the load-independent view): lifeboat (bucket) at {cpu_floor}%"
            f" of the floor, {cpu_restic}x restic"
        )
    for phase in ("backup", "restore"):
        urllib3 = results.speed_ratio(phase, "lifeboat", "floor-urllib3")
        of_urllib3 = spread([100 * r for r in urllib3], ".0f")
        print(f"{phase}: lifeboat (bucket) at {of_urllib3}% of the urllib3 floor's speed (until 12-07)")
    results.targets(
        [
            (f"{phase}: lifeboat's speed / the floor's", results.speed_ratio(phase, "lifeboat", "floor"), 0.9)
            for phase in ("backup", "restore", "second")
        ]
    )
    for tool in ("lifeboat", "lifeboat-dir", "restic"):
        stored = results.cells[("second", tool)].stored
        ratios = [s / c[0] for s, c in zip(stored, changes, strict=True)]
        print(f"second backup stored by {tool}: {spread(ratios, '.2f')}x the bytes changed")


if __name__ == "__main__":
    main()
