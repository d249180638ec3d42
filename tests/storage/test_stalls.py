"""Endpoints that accept connections and stop answering: every transfer has a stall
timeout, the retries are bounded, and the command ends on its own with one line naming
the endpoint, leaving nothing half-visible (the moto server over HTTP, behind a proxy)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from lifeboat.errors import StorageError
from lifeboat.storage.s3 import ATTEMPTS, S3Storage
from tests.harness import LifeboatCli, PolicyBuilder
from tests.harness.stallproxy import BlackHole, StallProxy

# the process must end on its own well within this (with stall_timeout = 1s)
BOUND = 60


def lifeboat(policy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # a hang shows up as TimeoutExpired: the test fails instead of waiting forever
    return LifeboatCli(policy, timeout=BOUND).run(*args, check=False)


def assert_one_line_failure(proc: subprocess.CompletedProcess[str], endpoint: str) -> str:
    host_port = endpoint.removeprefix("http://")
    assert proc.returncode not in (0, 70), proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("lifeboat: error: ") and host_port in first, proc.stderr
    assert "stopped answering" in first
    return first


@pytest.fixture
def proxy(s3_server: str) -> Iterator[StallProxy]:
    p = StallProxy(s3_server)
    yield p
    p.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def files_env(root: Path, bucket: str, endpoint: str) -> Path:
    (root / "docs").mkdir(exist_ok=True)
    return (
        PolicyBuilder()
        .s3_repository(endpoint, bucket, stall_timeout="1s", recovery_key="keys/recovery.key")
        .data_class("standard", rpo="1h", rto="1h")
        .files("docs", [root / "docs"])
        .write(root / "lifeboat.toml")
    )


@pytest.mark.parametrize("stall", ["hang-at-first-pack-upload", "freeze-bodies-midway"])
def test_a_backup_into_an_endpoint_that_stops_answering_ends_with_one_line(
    tmp_path: Path, s3_server: str, make_bucket, proxy: StallProxy, stall: str
) -> None:
    bucket = make_bucket(object_lock=False)
    policy = files_env(tmp_path, bucket, proxy.endpoint)
    (tmp_path / "docs" / "a.txt").write_bytes(b"first version\n")
    assert lifeboat(policy, "init").returncode == 0
    first = lifeboat(policy, "backup", "docs", "--json")
    assert first.returncode == 0, first.stderr
    (tmp_path / "docs" / "big.bin").write_bytes(os.urandom(12 << 20))  # a pack or more to upload
    if stall == "hang-at-first-pack-upload":
        proxy.hang_from = f"PUT /{bucket}/repo/data/"
    else:
        proxy.freeze_body_after = 16

    failed = lifeboat(policy, "backup", "docs")

    assert_one_line_failure(failed, proxy.endpoint)
    assert proxy.hanging or proxy.frozen  # the stall really happened, and was detected
    proxy.forward_normally()
    snapshots = json.loads(lifeboat(policy, "snapshots", "--json").stdout)
    assert [s["id"] for s in snapshots] == [json.loads(first.stdout)[0]["snapshot"]]
    check = lifeboat(policy, "check", "--read-data")
    assert check.returncode == 0, check.stdout + check.stderr
    again = lifeboat(policy, "backup", "docs")  # the failed run's lock does not block this one
    assert again.returncode == 0, again.stderr


def test_a_body_that_freezes_midway_gets_bounded_attempts_then_the_endpoint_is_given_up(
    s3_server: str, make_bucket, proxy: StallProxy
) -> None:
    bucket = make_bucket(object_lock=False)
    boto3.client("s3", endpoint_url=s3_server).put_object(
        Bucket=bucket, Key="p/big", Body=os.urandom(100_000)
    )
    storage = S3Storage(bucket, "p", endpoint_url=proxy.endpoint, stall_timeout=1)
    proxy.freeze_body_after = 1000
    try:
        with pytest.raises(StorageError, match=f"127.0.0.1:{proxy.port} stopped answering reading big"):
            storage.get("big")
        assert proxy.frozen == ATTEMPTS  # each attempt got headers and 1000 bytes, then nothing
        seen = len(proxy.requests)
        with pytest.raises(StorageError, match="stopped answering"):
            storage.put("other", b"x")  # the endpoint is given up: no new request waits it out
        assert len(proxy.requests) == seen
    finally:
        storage.close()


def test_an_endpoint_that_accepts_and_never_answers_from_the_start(
    tmp_path: Path, make_bucket, black_hole: BlackHole
) -> None:
    policy = files_env(tmp_path, make_bucket(object_lock=False), black_hole.endpoint)
    failed = lifeboat(policy, "init")
    assert_one_line_failure(failed, black_hole.endpoint)
    assert black_hole.accepted >= 1
    assert not (tmp_path / "keys" / "recovery.key").exists()  # nothing written for a repo that isn't


def objects_env(root: Path, bucket: str, endpoint: str) -> Path:
    return (
        PolicyBuilder()
        .repository(f"file://{root}/repo", recovery_key="keys/recovery.key")
        .data_class("standard", rpo="1h", rto="1h")
        .objects("media", f"s3://{bucket}/media", endpoint_url=endpoint, stall_timeout="1s", workers=4)
        .write(root / "lifeboat.toml")
    )


@pytest.mark.parametrize("stall", ["black-hole", "freeze-downloads-midway"])
def test_an_objects_backup_whose_bucket_stops_answering_ends_with_one_line(
    tmp_path: Path, s3_server: str, make_bucket, proxy: StallProxy, black_hole: BlackHole, stall: str
) -> None:
    bucket = make_bucket(object_lock=False)
    s3 = boto3.client("s3", endpoint_url=s3_server)
    for i in range(8):
        s3.put_object(Bucket=bucket, Key=f"media/img-{i}.jpg", Body=os.urandom(50_000))
    endpoint = black_hole.endpoint if stall == "black-hole" else proxy.endpoint
    policy = objects_env(tmp_path, bucket, endpoint)
    assert lifeboat(policy, "init").returncode == 0
    proxy.freeze_body_after = 100

    failed = lifeboat(policy, "backup", "media")

    first = assert_one_line_failure(failed, endpoint)
    if stall == "black-hole":
        assert black_hole.accepted >= 1
    else:
        assert proxy.frozen >= 1 and "downloading media" not in first  # keys, not the store's path
    snapshots = json.loads(lifeboat(policy, "snapshots", "--json").stdout)
    assert snapshots == []
