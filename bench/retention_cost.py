"""PutObjectRetention requests per snapshot under Object Lock, on SeaweedFS.

Real backups (first, unchanged, 2% changed) and then a simulated year of daily snapshots
reusing every pack (ensure_retention with a shifted "now"), for lock_days 30 and 7.
Usage: python bench/retention_cost.py [WORKDIR]
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).parent))
from lifeboat.assets.files.tree import backup_paths
from lifeboat.repo import Repository
from lifeboat.repo.immutability import ensure_retention, objects_of
from lifeboat.repo.reader import SnapshotReader
from lifeboat.storage import open_storage
from seaweed import SeaweedServer


def tree(root: Path, files: int, seed: int) -> None:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"f{i:04d}.bin").write_bytes(rng.randbytes(256 << 10))


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="retention-cost-"))
    with SeaweedServer(work / "seaweed") as server:
        admin = server.identity("admin")
        os.environ.update(AWS_ACCESS_KEY_ID=admin.access_key, AWS_SECRET_ACCESS_KEY=admin.secret_key)
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        client = boto3.client("s3", endpoint_url=server.endpoint)
        for lock_days in (30, 7):
            bucket = f"cost-{lock_days}"
            client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
            storage = open_storage(f"s3://{bucket}/r", endpoint_url=server.endpoint, lock_days=lock_days)
            repo, _, recovery = Repository.create(storage, lock_days=lock_days, cache_dir=work / "cache")
            src = work / f"src-{lock_days}"
            tree(src, 400, 1)  # 100 MB, about a dozen packs
            rows = []
            for label in ("first backup", "unchanged", "2% changed"):
                if label == "2% changed":
                    tree(src / "changed", 8, 2)
                before = storage.retention_requests
                backup_paths(repo, "files", [src])
                rows.append((label, storage.retention_requests - before))
            reader = Repository.open(storage, recovery_key=recovery, cache_dir=work / "cache")
            snap = reader.snapshots()[-1]
            blobs = set(snap.tree)
            for entry in SnapshotReader(reader, snap).entries():
                blobs.update(entry.chunks)
            names = objects_of(reader.index(refresh=True), blobs)
            start = datetime.now(UTC)
            daily = [ensure_retention(reader, names, now=start + timedelta(days=d)) for d in range(1, 366)]
            print(f"lock_days={lock_days}: {len(names)} objects referenced by the latest snapshot")
            for label, count in rows:
                print(f"  {label}: {count} PutObjectRetention")
            busy = [c for c in daily if c]
            print(
                f"  365 simulated daily snapshots: {sum(daily)} requests in total, "
                f"{len(busy)} snapshots extended anything (max {max(daily)}), "
                f"mean {sum(daily) / len(daily):.2f} per snapshot"
            )


if __name__ == "__main__":
    main()
