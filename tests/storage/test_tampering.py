"""Versions are the truth on S3: what a holder of the backup credentials adds on top of a
repository (new versions, delete markers) hides nothing and is reported."""

from __future__ import annotations

import json
import os

import boto3
import pytest

from lifeboat.storage import open_storage
from tests.cli.conftest import Cli, write_policy


@pytest.fixture(params=["s3", "seaweed"])
def s3_cli(request, tmp_path) -> tuple[Cli, str, str]:
    """An initialised repository on an Object Lock bucket of moto or SeaweedFS."""
    if request.param == "seaweed":
        endpoint = request.getfixturevalue("seaweed").endpoint
        bucket = request.getfixturevalue("make_seaweed_bucket")()
    else:
        endpoint = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("make_bucket")()
    source = tmp_path / "source"
    source.mkdir()
    # moto lets a client shorten COMPLIANCE retention: it is trusted, not probed
    trust = request.param == "s3"
    policy = write_policy(
        tmp_path, source, f"s3://{bucket}/lifeboat", endpoint_url=endpoint, lock_days=1, trust_endpoint=trust
    )
    cli = Cli(policy=policy, root=tmp_path, source=source)
    cli.env["LIFEBOAT_ACTOR"] = "test"
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    return cli, endpoint, bucket


def test_overwrites_and_delete_markers_hide_nothing_and_are_reported(s3_cli, tmp_path):
    cli, endpoint, bucket = s3_cli
    (cli.source / "precious.bin").write_bytes(os.urandom(200_000))
    (cli.source / "notes.txt").write_text("keep me\n")
    cli.run("backup", "config")
    before = json.loads(cli.run("snapshots", "--json").stdout)
    assert len(before) == 1

    # plain boto3 with the very credentials lifeboat uses, ignoring If-None-Match
    client = boto3.client("s3", endpoint_url=endpoint)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="lifeboat/")["Contents"]]
    snapshot = next(k for k in keys if k.startswith("lifeboat/snapshots/"))
    indexes = [k for k in keys if k.startswith("lifeboat/index/")]
    assert indexes
    client.put_object(Bucket=bucket, Key="lifeboat/config", Body=b'{"version": 1, "id": "forged"}')
    client.put_object(Bucket=bucket, Key=snapshot, Body=b"forged snapshot")
    client.put_object(Bucket=bucket, Key=indexes[0], Body=b"forged index")
    for key in indexes:
        client.delete_object(Bucket=bucket, Key=key)
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix="lifeboat/index/")

    assert json.loads(cli.run("snapshots", "--json").stdout) == before
    target = tmp_path / "restored"
    cli.run("restore", "config", "--target", str(target), "--recovery-key", str(tmp_path / "recovery.key"))
    restored = target / cli.source.name
    assert (restored / "precious.bin").read_bytes() == (cli.source / "precious.bin").read_bytes()
    assert (restored / "notes.txt").read_text() == "keep me\n"

    check = cli.run("check", "--json", check=False)
    assert check.returncode == 1
    tampered = {p["object"] for p in json.loads(check.stdout)["problems"] if p["kind"] == "tampered"}
    expected = {k.removeprefix("lifeboat/") for k in ["lifeboat/config", snapshot, *indexes]}
    assert tampered == expected
    status = cli.run("status", check=False)
    assert status.returncode == 1
    assert "tampered" in status.stdout and "config was overwritten" in status.stdout


@pytest.mark.parametrize("server", ["s3", "seaweed"])
def test_storage_reads_the_first_version_and_names_what_was_added(request, server):
    """Driver level: a new version and a delete marker on top change nothing lifeboat
    reads, lists or ranges, and tampering() names exactly those objects."""
    if server == "seaweed":
        endpoint = request.getfixturevalue("seaweed").endpoint
        bucket = request.getfixturevalue("make_seaweed_bucket")(object_lock=False)
    else:
        endpoint = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("make_bucket")(object_lock=False)
    writer = open_storage(f"s3://{bucket}/repo", endpoint_url=endpoint)
    writer.put("index/aa", b"original index")
    writer.put("data/ab/abcd", b"original pack")
    writer.put("snapshots/s1", b"untouched")
    client = boto3.client("s3", endpoint_url=endpoint)
    client.put_object(Bucket=bucket, Key="repo/index/aa", Body=b"forged")
    client.delete_object(Bucket=bucket, Key="repo/index/aa")
    client.put_object(Bucket=bucket, Key="repo/data/ab/abcd", Body=b"forged pack!!")

    for storage in (writer, open_storage(f"s3://{bucket}/repo", endpoint_url=endpoint)):
        assert storage.get("index/aa") == b"original index"
        assert storage.get("data/ab/abcd", 9, 4) == b"pack"
        assert storage.stat("data/ab/abcd").size == len(b"original pack")
        assert sorted(o.name for o in storage.list("")) == ["data/ab/abcd", "index/aa", "snapshots/s1"]
        found = {t.name: (t.later_versions, t.delete_markers) for t in storage.tampering()}
        assert found == {"index/aa": (1, 1), "data/ab/abcd": (1, 0)}
