"""A restore into a bucket reads each pack range of the snapshot about once, however many
transfer threads put objects at once: against SeaweedFS, every object comes back byte for
byte and the bytes read from the repository's packs stay near the packs' own size (they
were ten times it when 32 threads each took 16 objects in key order: the ranges they
needed did not fit in what the restore holds, and each object read its range again)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import boto3
from bench.seaweed import SeaweedServer
from botocore.config import Config

from lifeboat.assets.kind import RestoreRequest
from lifeboat.assets.registry import load_policy
from lifeboat.crypto.keys import load_recovery_key
from lifeboat.repo import Repository
from lifeboat.services.restore import perform
from lifeboat.storage import open_storage
from lifeboat.storage.base import Storage
from tests.harness import LifeboatCli
from tests.objects.bucket_env import media_policy

OBJECTS = 400  # 16 MB: more 1 MiB pack ranges than a restore holds at once (8)


class PackBytesRead:
    """The repository's storage, with the bytes read from packs counted."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner
        self.bytes = 0
        self._lock = threading.Lock()

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        data = self._inner.get(name, offset, length)
        if name.startswith("data/"):
            with self._lock:
                self.bytes += len(data)
        return data

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


def test_a_bucket_restore_reads_each_pack_range_about_once(
    tmp_path: Path, seaweed: SeaweedServer, make_seaweed_bucket: Callable[..., str]
) -> None:
    source, target = make_seaweed_bucket(object_lock=False), make_seaweed_bucket(object_lock=False)
    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint, config=Config(max_pool_connections=16))
    rng = random.Random(18)
    objects = {f"k{n:04}.bin": rng.randbytes(rng.randint(32 << 10, 48 << 10)) for n in range(OBJECTS)}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=source, Key=f"media/{k}", Body=objects[k]), objects))
    policy = media_policy(tmp_path, source, seaweed.endpoint, workers=32).write(tmp_path / "lifeboat.toml")
    lb = LifeboatCli(policy)
    lb.run("init")
    lb.run("backup", "media")
    counting = PackBytesRead(open_storage(f"file://{tmp_path / 'repo'}"))
    repo = Repository.open(counting, recovery_key=load_recovery_key(tmp_path / "keys" / "recovery.key"))  # type: ignore[arg-type]
    packs = sum(p.stat().st_size for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file())
    assert far_apart_in_key_order(repo) > OBJECTS // 4  # 32 threads stored them scattered

    result = perform(
        load_policy(policy), repo, RestoreRequest(asset="media", target=f"s3://{target}/")
    ).details

    assert result["ok"] and result["restored"] == OBJECTS
    restored = {
        o["Key"]: s3.get_object(Bucket=target, Key=o["Key"])["Body"].read()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=target)
        for o in page.get("Contents", [])
    }
    assert restored == objects
    assert packs > 8 << 20  # the snapshot spans more ranges than are held at once
    assert counting.bytes <= 1.5 * packs, (counting.bytes, packs)


def far_apart_in_key_order(repo: Repository) -> int:
    """Neighbouring keys of the newest snapshot whose chunks lie in other packs or more
    than a range (1 MiB) apart: a restore in key order would need as many ranges."""
    entries = [e for e in repo.reader(repo.snapshots()[-1]).iter_entries() if e.chunks]
    where = repo.index().get_many([e.chunks[0] for e in entries])
    at = [(where[e.chunks[0]].pack, where[e.chunks[0]].offset) for e in sorted(entries, key=lambda e: e.path)]
    return sum(a[0] != b[0] or abs(a[1] - b[1]) > 1 << 20 for a, b in pairwise(at))
