"""Sharded object backups over moto's real HTTP server, with real processes: plans from an
S3 Inventory report (AWS's CSV and Parquet formats, written here) or from delimiter
listings, shards run as separate processes (as pods of an Indexed Job would), a shard
killed midway, and one snapshot per run whose restore equals the bucket."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import random
import secrets
import signal
import subprocess
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import kubernetes_validate
import pytest
import yaml

from tests.harness.packs import stored_blob_table
from tests.objects.bucket_env import BucketEnv, media_policy

# every kind of key, version and delete marker below, over ~20 prefixes, and each of 4
# shards (3 restore parts) gets a share; the 2,000 take the same paths, slower
OBJECTS = int(os.environ.get("LIFEBOAT_TEST_SHARD_OBJECTS", "200"))

CSV_FIELDS = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag"
PARQUET_SCHEMA = (
    "message s3.inventory { required binary bucket (STRING); required binary key (STRING); "
    "optional binary version_id (STRING); optional boolean is_latest; optional boolean is_delete_marker; "
    "optional int64 size; optional int64 last_modified_date (TIMESTAMP(MILLIS,true)); "
    "optional binary e_tag (STRING);}"
)


@dataclass
class ShardsEnv(BucketEnv):
    """Four shards, two at a time, every 30 minutes."""

    def restored_equals(self, snapshot: str | None, expected: dict, *extra: str) -> dict:
        # a bucket of this restore's own: tests may share their source bucket
        name = f"{self.bucket}-r{secrets.token_hex(3)}"
        staging = self.s3.create_bucket(Bucket=name)["Location"].strip("/")
        point = ["--snapshot", snapshot] if snapshot else []
        out = self.json("restore", "media", *point, "--target", f"s3://{staging}/r", *extra)
        assert out["ok"] and not out["failed"] and out["restored"] == len(expected)  # type: ignore[index]
        assert self.state(staging, "r/") == expected
        return out  # type: ignore[return-value]


def make_env(root: Path, endpoint: str, bucket: str, workers: int = 16) -> ShardsEnv:
    policy = media_policy(
        root, bucket, endpoint, workers=workers, shards=4, shard_parallelism=2, schedule="*/30 * * * *"
    )
    return ShardsEnv(
        policy.write(root / "lifeboat.toml"), timeout=600, root=root, endpoint=endpoint, bucket=bucket
    )


def populate(env: ShardsEnv, n: int, big: int = 0) -> dict[str, tuple[str, str, dict[str, str]]]:
    """n objects over nested prefixes (a few at the top), some with content type and
    metadata; every 10th gets a second version, every 25th a delete marker; ``big``
    extra objects of 1.5 MiB. Returns what ``env.state()`` would read back: key ->
    (sha256, content type, metadata) of every current object."""
    keys = [
        f"top-{i}.txt"
        if i % 40 == 0
        else f"weird/ünï+cøde %2B {i}.jpg"  # URL-encoded in a CSV inventory: decoded exactly
        if i % 45 == 0
        else f"user/{i % 9}/{'album/' if i % 4 == 0 else ''}img {i}.jpg"
        for i in range(n)
    ]

    written: dict[str, tuple[bytes, dict[str, Any]]] = {}

    def put(i: int) -> None:
        extra = {"ContentType": "image/jpeg", "Metadata": {"owner": f"user{i % 7}"}} if i % 3 == 0 else {}
        body = random.Random(i).randbytes(random.Random(-i).randrange(0, 30_000))
        env.s3.put_object(Bucket=env.bucket, Key=f"media/{keys[i]}", Body=body, **extra)
        if i % 10 == 0:
            body += b"v2"
            env.s3.put_object(Bucket=env.bucket, Key=f"media/{keys[i]}", Body=body, **extra)
        if i % 25 == 0:
            env.s3.delete_object(Bucket=env.bucket, Key=f"media/{keys[i]}")
        else:
            written[keys[i]] = (body, extra)

    def put_big(i: int) -> None:
        body = random.Random(i).randbytes(3 << 19)
        env.s3.put_object(Bucket=env.bucket, Key=f"media/big/{i % 8}/b{i}", Body=body)
        written[f"big/{i % 8}/b{i}"] = (body, {})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(n)))
        list(pool.map(put_big, range(big)))
    # what was written, not read back through moto (96 MiB in the killed-shard test); the
    # content type the server gives an object stored without one is read once
    plain = next(key for key, (_, extra) in written.items() if not extra)
    default_type = env.s3.head_object(Bucket=env.bucket, Key=f"media/{plain}")["ContentType"]
    return {
        key: (
            hashlib.sha256(body).hexdigest(),
            extra.get("ContentType", default_type),
            extra.get("Metadata", {}),
        )
        for key, (body, extra) in written.items()
    }


def write_inventory(env: ShardsEnv, fmt: str, files: int = 3) -> str:
    """An S3 Inventory report of every version of the bucket, in AWS's layout; its
    manifest's URL."""
    rows = []
    for page in env.s3.get_paginator("list_object_versions").paginate(Bucket=env.bucket):
        for v in page.get("Versions", []):
            rows.append(
                (v["Key"], v["VersionId"], v["IsLatest"], False, v["Size"], v["LastModified"], v["ETag"])
            )
        for d in page.get("DeleteMarkers", []):
            rows.append((d["Key"], d["VersionId"], d["IsLatest"], True, None, d["LastModified"], None))
    random.Random(7).shuffle(rows)  # report files are not sorted by key
    inv = env.s3.create_bucket(Bucket=f"{env.bucket}-inv")["Location"].strip("/")
    base = f"inventory/{env.bucket}/all/2026-12-01T00-00Z"
    entries = []
    for part in range(files):
        chunk = rows[part::files]
        if fmt == "CSV":
            text = io.StringIO()
            writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
            for key, vid, latest, marker, size, modified, etag in chunk:
                writer.writerow(
                    [
                        env.bucket,
                        urllib.parse.quote_plus(key, safe="/"),
                        vid,
                        str(latest).lower(),
                        str(marker).lower(),
                        "" if size is None else str(size),
                        modified.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                        (etag or "").strip('"'),
                    ]
                )
            data = gzip.compress(text.getvalue().encode())
            name = f"{base}/data/part-{part}.csv.gz"
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table(
                {
                    "bucket": [env.bucket] * len(chunk),
                    "key": [r[0] for r in chunk],
                    "version_id": [r[1] for r in chunk],
                    "is_latest": [r[2] for r in chunk],
                    "is_delete_marker": [r[3] for r in chunk],
                    "size": pa.array([r[4] for r in chunk], pa.int64()),
                    "last_modified_date": pa.array([r[5] for r in chunk], pa.timestamp("ms", tz="UTC")),
                    "e_tag": [(r[6] or "").strip('"') or None for r in chunk],
                }
            )
            out = io.BytesIO()
            pq.write_table(table, out)
            data = out.getvalue()
            name = f"{base}/data/part-{part}.parquet"
        env.s3.put_object(Bucket=inv, Key=name, Body=data)
        entries.append({"key": name, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()})
    manifest = _manifest(env, inv, fmt, entries)
    env.s3.put_object(Bucket=inv, Key=f"{base}/manifest.json", Body=json.dumps(manifest).encode())
    return f"s3://{inv}/{base}/manifest.json"


def _manifest(env: ShardsEnv, inv: str, fmt: str, entries: list[dict]) -> dict:
    return {
        "sourceBucket": env.bucket,
        "destinationBucket": f"arn:aws:s3:::{inv}",
        "version": "2016-11-30",
        "creationTimestamp": str(int(datetime.now(UTC).timestamp() * 1000)),
        "fileFormat": fmt,
        "fileSchema": CSV_FIELDS if fmt == "CSV" else PARQUET_SCHEMA,
        "files": entries,
    }


@pytest.fixture
def env(tmp_path, s3_server, make_bucket) -> ShardsEnv:
    e = make_env(tmp_path, s3_server, make_bucket(object_lock=False, versioning=True))
    e.run("init")
    return e


@pytest.fixture(scope="module")
def populated(s3_server, tmp_path_factory) -> tuple[str, dict]:
    """A versioned bucket filled by ``populate(OBJECTS)``, and its state, for the tests
    that only read it: each backs it up into a repository of its own and restores it into
    a bucket of its own."""
    bucket = f"lb-{secrets.token_hex(6)}"
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    env = make_env(tmp_path_factory.mktemp("populated"), s3_server, bucket)
    return bucket, populate(env, OBJECTS)


@pytest.mark.parametrize("plan", ["listing", "csv-inventory"])
def test_local_shards_give_one_snapshot_equal_to_the_bucket(tmp_path, s3_server, populated, plan):
    bucket, before = populated
    env = make_env(tmp_path, s3_server, bucket)
    env.run("init")
    extra = []
    if plan == "csv-inventory":
        url = write_inventory(env, "CSV")
        # an older, empty report beside it: the configuration's prefix means its newest report
        older = url.replace("2026-12-01T00-00Z", "2026-11-30T00-00Z")
        bucket, key = older[len("s3://") :].split("/", 1)
        env.s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(_manifest(env, bucket, "CSV", [])).encode())
        extra = ["--inventory", url.rsplit("2026-12-01T00-00Z", 1)[0]]
    out = env.json("backup", "media", "--shards", "4", *extra)
    [snap] = out  # type: ignore[misc]
    assert snap["ok"] and snap["labels"]["shards"] == "4"
    assert int(snap["labels"]["objects"]) == len(before) == snap["stats"]["files"]
    assert [s["id"] for s in env.json("snapshots", "--asset", "media")] == [snap["snapshot"]]  # type: ignore[union-attr]
    # restored by 3 processes, each its part of the newest snapshot
    out = env.restored_equals(None, before, "--shards", "3")
    assert out["snapshot"] == snap["snapshot"] and len(out["parts"]) == 3
    assert all(p["restored"] > 0 for p in out["parts"])


def test_indexed_job_flow_from_parquet_inventory_records_the_versions_read(env):
    at_inventory = populate(env, OBJECTS)
    url = write_inventory(env, "Parquet")
    plan = env.json("backup", "media", "--plan-shards", "4", "--inventory", url)
    assert plan["method"] == "inventory" and sum(p["objects"] for p in plan["parts"]) == len(at_inventory)  # type: ignore[index]
    run = plan["run"]  # type: ignore[index]
    # the bucket moves on after the inventory: a changed object and a new one
    changed = sorted(at_inventory)[3]
    env.s3.put_object(Bucket=env.bucket, Key=f"media/{changed}", Body=b"changed after the inventory")
    env.s3.put_object(Bucket=env.bucket, Key="media/new-after-inventory", Body=b"new")
    gone = sorted(at_inventory)[5]  # every version removed: nothing left to read
    for v in env.s3.list_object_versions(Bucket=env.bucket, Prefix=f"media/{gone}")["Versions"]:
        if v["Key"] == f"media/{gone}":
            env.s3.delete_object(Bucket=env.bucket, Key=v["Key"], VersionId=v["VersionId"])
    del at_inventory[gone]
    workers = [
        env.popen("backup", "media", "--run", run, "--json", env={"JOB_COMPLETION_INDEX": str(i)}, text=True)
        for i in range(4)
    ]
    results = [json.loads(w.communicate(timeout=600)[0]) for w in workers]
    assert [r["index"] for r in results] == [0, 1, 2, 3] and all(w.returncode == 0 for w in workers)
    assert env.json("snapshots", "--asset", "media") == []  # nothing visible before the commit
    [snap] = env.json("backup", "media", "--run", run, "--commit")  # type: ignore[misc]
    assert snap["labels"]["inventory_date"] and snap["labels"]["run"] == run
    assert snap["labels"]["vanished"] == "1" and snap["labels"]["objects"] == str(len(at_inventory) + 1)
    # the snapshot holds each object as the inventory listed it, not as it is now
    env.restored_equals(snap["snapshot"], at_inventory)
    # committing again publishes nothing new
    again = env.json("backup", "media", "--run", run, "--commit")
    assert again[0]["snapshot"] == snap["snapshot"] and len(env.json("snapshots", "--asset", "media")) == 1  # type: ignore[index, arg-type]


def _packs(repo: Path) -> set[str]:
    # polled while a shard writes: os.walk skips a temp file renamed away mid-walk (rglob raised)
    return {name for _, _, names in os.walk(repo / "data") for name in names if not name.startswith(".")}


def test_a_killed_shard_blocks_the_commit_and_its_rerun_uploads_nothing_twice(
    tmp_path, s3_server, make_bucket
):
    env = make_env(tmp_path, s3_server, make_bucket(object_lock=False, versioning=True), workers=2)
    env.run("init")
    before = populate(env, 100, big=64)
    plan = env.json("backup", "media", "--plan-shards", "4")
    run = plan["run"]  # type: ignore[index]
    victim = max(plan["parts"], key=lambda p: p["bytes"])["index"]  # type: ignore[index]
    for i in range(4):
        if i != victim:
            env.run("backup", "media", "--run", run, "--shard", str(i))
    packs = _packs(env.root / "repo")
    # the finished shards belong to no snapshot yet: a prune meanwhile keeps them
    env.run("prune")
    assert _packs(env.root / "repo") == packs
    proc = env.popen(
        "backup",
        "media",
        "--run",
        run,
        "--shard",
        str(victim),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not _packs(env.root / "repo") - packs:  # killed once it has stored a pack
        assert proc.poll() is None, "the shard ended before it stored anything"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    refused = env.run("backup", "media", "--run", run, "--commit", check=False)
    assert refused.returncode == 1 and f"shard(s) {victim} of 4 have no result" in refused.stderr
    assert env.json("snapshots", "--asset", "media") == []
    rerun = env.json("backup", "media", "--run", run, "--shard", str(victim))
    stats = rerun["stats"]  # type: ignore[index]
    assert not rerun["already_done"] and 0 < stats["new_bytes"] < stats["bytes"]  # type: ignore[index]
    [snap] = env.json("backup", "media", "--run", run, "--commit")  # type: ignore[misc]
    # every chunk is stored once, across the killed run, its rerun and the other shards
    # (a killed writer's temp file is not part of the repository: prune removes it)
    blobs = [
        b[1] for b in stored_blob_table(f"file://{env.root / 'repo'}", env.root / "keys" / "recovery.key")
    ]
    assert len(blobs) == len(set(blobs))
    env.restored_equals(snap["snapshot"], before)
    again = env.json("backup", "media", "--run", run, "--shard", "0")
    assert again["already_done"]  # type: ignore[index]


def test_status_counts_a_sharded_snapshot_from_its_listing_not_its_commit(env):
    """The shards of a run read the bucket as it was listed; their commit may come hours
    later. Exposure counts from the listing: before, it started again at the commit."""
    populate(env, 20)
    run = env.at(-3 * 3600).json("backup", "media", "--plan-shards", "2")["run"]  # type: ignore[index]
    for shard in ("0", "1"):
        env.run("backup", "media", "--run", run, "--shard", shard)
    [snap] = env.json("backup", "media", "--run", run, "--commit")  # type: ignore[misc]
    listed = snap["labels"]["data_as_of"]
    seen = json.loads(env.run("status", "--json", check=False).stdout)
    [media] = [a for a in seen["assets"] if a["asset"] == "media"]
    assert media["last_backup"] == listed[:19] + "+00:00" and media["exposure_s"] >= 3 * 3600
    assert any("exceeds RPO" in b for b in media["breaches"])


def test_sharded_options_are_checked(env):
    populate(env, 20)
    assert "no shard run nope" in env.run("backup", "media", "--run", "nope", "--commit", check=False).stderr
    proc = env.run("backup", "media", "--run", "x1", check=False)
    assert proc.returncode == 2 and "--shard I" in proc.stderr and "Traceback" not in proc.stderr
    proc = env.run("backup", "--shards", "2", check=False)
    assert proc.returncode == 2 and "one asset" in proc.stderr
    run = env.json("backup", "media", "--plan-shards", "2")["run"]  # type: ignore[index]
    proc = env.run("backup", "media", "--run", run, "--shard", "5", check=False)
    assert proc.returncode == 2 and "shards are 0 to 1" in proc.stderr
    proc = env.run("restore", "media", "--target", "s3://x/y", "--shard", "1", check=False)
    assert proc.returncode == 2 and "--shards N" in proc.stderr
    proc = env.run("restore", "media", "--in-place", "--yes", "--shards", "2", check=False)
    assert proc.returncode == 2 and "not sharded" in proc.stderr
    # a run belongs to the source it was planned for
    env.policy.write_text(
        env.policy.read_text().replace(f"s3://{env.bucket}/media", f"s3://{env.bucket}/other")
    )
    proc = env.run("backup", "media", "--run", run, "--shard", "0", check=False)
    assert proc.returncode == 2 and "plan a new run" in proc.stderr


def test_exported_kubernetes_jobs_validate_and_run_what_the_local_flow_ran(env, tmp_path):
    populate(env, 30)
    [local] = env.json("backup", "media", "--shards", "4")  # type: ignore[misc]
    out = tmp_path / "k8s"
    env.run("schedule", "export", "--kubernetes", str(out))
    folder = out / "lifeboat-shards-media"
    assert sorted(p.name for p in folder.iterdir()) == [
        "commit-job.yaml",
        "cronjob.yaml",
        "plan-job.yaml",
        "restore-job.yaml",
        "shards-job.yaml",
    ]
    run = "20261201-030000-k8s"
    docs = {}
    for path in folder.iterdir():
        text = path.read_text().replace("@RUN@", run).replace("@SNAPSHOT@", local["snapshot"])
        for doc in yaml.safe_load_all(text):
            kubernetes_validate.validate(doc, "1.33.0", strict=True)  # raises on any schema violation
            docs[(path.name, doc["kind"])] = doc
    # the orchestrator's templates are the same Jobs, and valid too
    for template in docs[("cronjob.yaml", "ConfigMap")]["data"].values():
        kubernetes_validate.validate(yaml.safe_load(template.replace("@RUN@", run)), "1.33.0", strict=True)
    shards = docs[("shards-job.yaml", "Job")]["spec"]
    assert shards["completionMode"] == "Indexed" and shards["completions"] == 4 and shards["parallelism"] == 2
    assert shards["backoffLimitPerIndex"] >= 1 and shards["template"]["spec"]["restartPolicy"] == "Never"
    [pod] = shards["template"]["spec"]["containers"]
    assert pod["resources"]["requests"]["cpu"] and pod["resources"]["requests"]["memory"]
    keys = next(v for v in shards["template"]["spec"]["volumes"] if v["name"] == "keys")
    assert keys["secret"]["secretName"] == "lifeboat-backup-key"
    # each pod runs exactly what each local worker ran; Kubernetes sets JOB_COMPLETION_INDEX
    # in an Indexed Job's pods as the local flow set it in each worker's environment
    assert local["workers"]["env"] == ["JOB_COMPLETION_INDEX"]
    assert pod["args"][2:] == [a.replace(local["run"], run) for a in local["workers"]["args"]]
    plan = docs[("plan-job.yaml", "Job")]["spec"]["template"]["spec"]["containers"][0]["args"]
    commit = docs[("commit-job.yaml", "Job")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert plan[2:] == ["backup", "media", "--plan-shards", "4", "--run", run, "--json"]
    assert commit[2:] == ["backup", "media", "--run", run, "--commit", "--json"]
    script = docs[("cronjob.yaml", "CronJob")]["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    steps = [line.split()[1] for line in script["command"][2].splitlines() if line.startswith("step ")]
    assert steps == ["plan", "shards", "commit"]  # the commit starts only after every shard
    # a sharded asset gets no plain backup CronJob besides
    assert "lifeboat-backup-media" not in (out / "lifeboat-cronjobs.yaml").read_text()
