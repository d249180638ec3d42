"""Where a snapshot listing pauses the garbage collector (memory.collection_paused): a pause
holds for every thread of the process (the daemon's WAL streamers among them), so a
listing downloads headers with the collector on, and pauses only while it decodes and
builds. Against a real S3 server (SeaweedFS): the listing's GETs are recorded as they are
made, with whether the collector was on."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from lifeboat.repo import Repository
from lifeboat.repo.model import SnapshotInfo
from lifeboat.services.keys import issue_writer_key
from lifeboat.storage import open_storage
from lifeboat.storage.base import Storage
from lifeboat.storage.s3 import S3Storage
from tests.harness.wait import wait_until


def backup(repo: Repository, n: int) -> SnapshotInfo:
    with repo.backup("app", "files") as session:
        session.add_bytes(f"file-{n}.txt", f"backup {n}\n".encode())
        return session.commit()


def record_header_reads(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether the collector was on at each GET of a snapshot header from now on."""
    seen: list[bool] = []
    real_get = storage.get

    def get(name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name.startswith("snapshots/"):
            seen.append(gc.isenabled())
        return real_get(name, offset, length)

    monkeypatch.setattr(storage, "get", get)
    return seen


@pytest.fixture
def s3_storage(seaweed: Any, make_seaweed_bucket: Any) -> Iterator[Storage]:
    bucket = make_seaweed_bucket(object_lock=False)
    storage = open_storage(f"s3://{bucket}/repo", endpoint_url=seaweed.endpoint)
    yield storage
    storage.close()


def migrated(storage: Storage, endpoint: str, make_bucket: Any) -> Storage:
    """The repository copied object by object into a new bucket, as a migration leaves it:
    the same bytes, each listed with a later time (S3 times are in whole seconds: the copy
    starts once the second of the newest header has passed)."""
    client = boto3.client("s3", endpoint_url=endpoint)
    assert isinstance(storage, S3Storage)
    source, target = storage.bucket, make_bucket(object_lock=False)
    newest = max(o.mtime for o in storage.list("snapshots/"))
    wait_until(lambda: time.time() >= int(newest) + 1, "the second of the newest header to pass")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=source, Prefix="repo/"):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=source, Key=obj["Key"])["Body"].read()
            client.put_object(Bucket=target, Key=obj["Key"], Body=body)
    return open_storage(f"s3://{target}/repo", endpoint_url=endpoint)


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    assert gc.isenabled()
    yield
    gc.enable()


def test_headers_new_since_the_cache_are_read_with_the_collector_on(
    s3_storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, key, _ = Repository.create(s3_storage, cache_dir=tmp_path / "writer-cache")
    lister = Repository.open(s3_storage, backup_key=key, cache_dir=tmp_path / "lister-cache")
    first = [backup(writer, n) for n in range(3)]
    assert [s.id for s in lister.snapshots()] == [s.id for s in first]  # the lister's cache: 3
    assert lister.latest_snapshot_id("app") == first[-1].id  # and its summary
    later = [backup(writer, n) for n in range(3, 5)]

    reads = record_header_reads(s3_storage, monkeypatch)
    assert lister.latest_snapshot_id("app") == later[-1].id  # the summary lacks two headers
    assert reads == [True, True]
    reads.clear()
    assert [s.id for s in lister.snapshots()] == [s.id for s in first + later]  # the cache lacks two
    assert reads == [True, True]
    assert gc.isenabled()


def test_a_listing_the_cache_answers_reads_no_header(
    s3_storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything cached: the listing is served (paused) without a GET, and the collector
    is on again after it."""
    repo, _, _ = Repository.create(s3_storage, cache_dir=tmp_path / "cache")
    made = [backup(repo, n) for n in range(3)]
    repo.snapshots()  # fills the cache with the three
    reads = record_header_reads(s3_storage, monkeypatch)
    assert [s.id for s in repo.snapshots()] == [s.id for s in made]
    assert repo.latest_snapshot_id("app") == made[-1].id
    assert reads == []
    assert gc.isenabled()


def test_headers_listed_with_another_time_are_read_with_the_collector_on(
    s3_storage: Storage,
    seaweed: Any,
    make_seaweed_bucket: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cache holds every id, but not as listed now (the repository moved to a new
    bucket): each header is read again, with the collector on, and the listing is the one
    it was."""
    repo, key, _ = Repository.create(s3_storage, cache_dir=tmp_path / "cache")
    made = [backup(repo, n) for n in range(3)]
    assert [s.id for s in repo.snapshots()] == [s.id for s in made]
    assert repo.latest_snapshot_id("app") == made[-1].id
    moved = migrated(s3_storage, seaweed.endpoint, make_seaweed_bucket)
    try:
        there = Repository.open(moved, backup_key=key, cache_dir=tmp_path / "cache")
        reads = record_header_reads(moved, monkeypatch)
        assert there.latest_snapshot_id("app") == made[-1].id
        assert reads == [True, True, True]
        reads.clear()
        assert [s.id for s in there.snapshots()] == [s.id for s in made]
        assert reads == [True, True, True]
    finally:
        moved.close()


def test_a_writer_listing_after_the_recovery_side_reads_with_the_collector_on(
    s3_storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One host's cache, both sides: the recovery side caches db-1's headers opened, which
    writer db-2 does not open. db-2 then reads them from the storage (its listing counts
    them as another writer's), with the collector on, and so does the recovery side after it."""
    cache = tmp_path / "host-cache"
    db1, _, recovery = Repository.create(s3_storage, cache_dir=tmp_path / "db1-cache")
    made = [backup(db1, n) for n in range(3)]
    key2, _, _ = issue_writer_key(Repository.open(s3_storage, recovery_key=recovery), "db-2", ["other"])
    reads = record_header_reads(s3_storage, monkeypatch)
    reader = Repository.open(s3_storage, recovery_key=recovery, cache_dir=cache)
    assert [s.id for s in reader.snapshots()] == [s.id for s in made]
    assert reads == [True, True, True]
    reads.clear()
    db2 = Repository.open(s3_storage, backup_key=key2, cache_dir=cache)
    listing = db2.snapshot_listing()
    assert listing.accepted == [] and len(listing.sealed) == 3
    assert reads == [True, True, True]
    reads.clear()
    assert [s.id for s in reader.snapshots()] == [s.id for s in made]
    assert all(reads)
