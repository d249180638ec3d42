"""Benchmark: lifeboat backing up a bucket (moto over HTTP) vs restic backing up the same
objects mirrored in a directory; then a full restore; then a second backup after 2% changed.

    .venv/bin/python bench/objects.py [--objects 20000] [--size-mb 1000]

Not a test. The media mix is realistic: mostly incompressible JPEG/MP4-like bodies with a
long tail of sizes, a few text/JSON objects.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import boto3

from common import apt_install, du, media_block, print_table, text_block, timed

ROOT = Path(__file__).resolve().parent.parent
LIFEBOAT = str(ROOT / ".venv" / "bin" / "lifeboat")
FLOOR = [sys.executable, str(Path(__file__).resolve().parent / "s3_floor.py")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sizes(n: int, total: int, rng: random.Random) -> list[int]:
    raw = [rng.lognormvariate(10, 1.3) for _ in range(n)]
    scale = total / sum(raw)
    return [max(0, int(r * scale)) for r in raw]


def body(i: int, size: int) -> bytes:
    rng = random.Random(i)
    return text_block(rng, size) if i % 10 == 0 else media_block(rng, size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "objects")
    args = parser.parse_args()
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    restic = apt_install("restic", "restic")
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    port = free_port()
    # moto in its own process: a forked child of a big parent would report the parent's RSS
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="media")
    s3.put_bucket_versioning(Bucket="media", VersioningConfiguration={"Status": "Enabled"})
    rng = random.Random(3)
    plan = sizes(args.objects, args.size_mb << 20, rng)
    mirror = work / "mirror"
    print(
        f"uploading {args.objects} objects ({args.size_mb} MB) to the bucket and the mirror ...", flush=True
    )

    def put(i: int) -> None:
        key = f"u{i % 500}/{i:06d}.{'json' if i % 10 == 0 else 'jpg'}"
        data = body(i, plan[i])
        s3.put_object(Bucket="media", Key=key, Body=data)
        path = mirror / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(args.objects)))
    # two repositories: the directory rows must not dedup against the bucket's snapshot
    policy = work / "lifeboat.toml"
    policy.write_text(f"""
[repository]
url = "file://{work / "lifeboat-repo"}"
keyfile = "backup.key"
recovery_key = "recovery.key"
[classes.c]
rpo = "1h"
rto = "1h"
[assets.media]
kind = "objects"
class = "c"
source = "s3://media/"
endpoint_url = "{endpoint}"
workers = 32
""")
    dir_policy = work / "lifeboat-dir.toml"
    dir_policy.write_text(f"""
[repository]
url = "file://{work / "lifeboat-dir-repo"}"
keyfile = "dir-backup.key"
recovery_key = "dir-recovery.key"
[classes.c]
rpo = "1h"
rto = "1h"
[assets.mirror]
kind = "objects"
class = "c"
source = "dir://{mirror}"
""")
    env = {
        "RESTIC_PASSWORD": "bench",
        "RESTIC_REPOSITORY": str(work / "restic-repo"),
        "RESTIC_CACHE_DIR": str(work / "restic-cache"),
    }
    timed("lifeboat init", [LIFEBOAT, "-c", str(policy), "init"])
    timed("lifeboat init dir", [LIFEBOAT, "-c", str(dir_policy), "init"])
    timed("restic init", [restic, "init"], env=env)
    total = sum(plan)
    runs = [
        ("backup", "lifeboat", timed("lb backup", [LIFEBOAT, "-c", str(policy), "backup", "media"]), total),
        (
            "backup",
            "lifeboat-dir",
            timed("lb backup dir", [LIFEBOAT, "-c", str(dir_policy), "backup", "mirror"]),
            total,
        ),
        ("backup", "restic", timed("restic backup", [restic, "backup", "-q", str(mirror)], env=env), total),
        (
            "backup",
            "floor",
            timed("endpoint floor: list + GET all", [*FLOOR, "get", endpoint, "media"]),
            total,
        ),
    ]
    s3r = boto3.client("s3", endpoint_url=endpoint)
    s3r.create_bucket(Bucket="restored")
    s3r.create_bucket(Bucket="floor")
    runs.append(
        (
            "restore",
            "lifeboat",
            timed(
                "lb restore",
                [LIFEBOAT, "-c", str(policy), "restore", "media", "--target", "s3://restored/all"],
            ),
            total,
        )
    )
    runs.append(
        (
            "restore",
            "lifeboat-dir",
            timed(
                "lb restore dir",
                [
                    LIFEBOAT,
                    "-c",
                    str(dir_policy),
                    "restore",
                    "mirror",
                    "--target",
                    f"dir://{work / 'lb-out'}",
                ],
            ),
            total,
        )
    )
    runs.append(
        (
            "restore",
            "restic",
            timed(
                "restic restore",
                [restic, "restore", "latest", "--target", str(work / "restic-out"), "-q"],
                env=env,
            ),
            total,
        )
    )
    runs.append(
        (
            "restore",
            "floor",
            timed("endpoint floor: PUT all", [*FLOOR, "put", endpoint, "floor", str(mirror)]),
            total,
        )
    )
    changed = rng.sample(range(args.objects), args.objects // 50)
    changed_keys = work / "changed-keys"
    changed_keys.write_text(
        "".join(f"u{i % 500}/{i:06d}.{'json' if i % 10 == 0 else 'jpg'}\n" for i in changed)
    )
    for i in changed:
        key = f"u{i % 500}/{i:06d}.{'json' if i % 10 == 0 else 'jpg'}"
        data = body(i + 10**7, plan[i])
        s3.put_object(Bucket="media", Key=key, Body=io.BytesIO(data))
        (mirror / key).write_bytes(data)
    runs.append(
        ("second", "lifeboat", timed("lb backup 2", [LIFEBOAT, "-c", str(policy), "backup", "media"]), total)
    )
    runs.append(
        (
            "second",
            "lifeboat-dir",
            timed("lb backup dir 2", [LIFEBOAT, "-c", str(dir_policy), "backup", "mirror"]),
            total,
        )
    )
    runs.append(
        ("second", "restic", timed("restic backup 2", [restic, "backup", "-q", str(mirror)], env=env), total)
    )
    runs.append(
        (
            "second",
            "floor",
            timed(
                "endpoint floor: list + GET changed",
                [*FLOOR, "get", endpoint, "media", "--only", str(changed_keys)],
            ),
            total,
        )
    )
    server.terminate()
    rows = [
        [
            phase,
            tool,
            f"{r.seconds:.1f}",
            f"{args.objects / r.seconds:.0f}",
            f"{size / r.seconds / 1e6:.0f}",
            f"{r.peak_rss_mb:.0f}",
        ]
        for phase, tool, r, size in runs
    ]
    print_table(["phase", "tool", "seconds", "objects/s", "MB/s", "peak RSS MB"], rows)
    secs = {(p, t): r.seconds for p, t, r, _ in runs}
    for phase in ("backup", "restore", "second"):
        restic_s = secs[(phase, "restic")]
        ratios = [
            f"{label} {restic_s / secs[(phase, tool)]:.2f}x restic"
            for tool, label in (("lifeboat", "bucket -> bucket"), ("lifeboat-dir", "directory -> directory"))
            if (phase, tool) in secs
        ]
        floor = secs[(phase, "floor")]
        print(
            f"{phase}: lifeboat " + "; ".join(ratios) + f" (endpoint floor {floor:.1f} s: no client of this"
            f" endpoint can beat {restic_s / floor:.2f}x restic; lifeboat bucket at"
            f" {floor / secs[(phase, 'lifeboat')]:.0%} of the floor's speed)"
        )
    stored_lb, stored_restic = du(work / "lifeboat-dir-repo") / 1e6, du(work / "restic-repo") / 1e6
    print(f"stored (directory, both snapshots): lifeboat {stored_lb:.0f} MB, restic {stored_restic:.0f} MB")


if __name__ == "__main__":
    main()
