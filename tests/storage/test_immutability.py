"""Object Lock that follows the data, against moto and SeaweedFS (real HTTP servers)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.exceptions import ClientError

from lifeboat.assets.files.tree import backup_paths, restore_snapshot
from lifeboat.errors import ConfigError
from lifeboat.repo import KeepRules, Repository
from lifeboat.repo.format import pack_name, snapshot_name
from lifeboat.repo.locks import list_locks
from lifeboat.repo.reader import SnapshotReader
from lifeboat.storage import open_storage
from tests.cli.conftest import write_policy
from tests.harness import LifeboatCli
from tests.harness.stallproxy import StallProxy


@pytest.fixture(params=["s3", "seaweed"])
def endpoint(request):
    """(name, endpoint URL, make_bucket) of moto or SeaweedFS."""
    if request.param == "seaweed":
        server = request.getfixturevalue("seaweed")
        return "seaweed", server.endpoint, request.getfixturevalue("make_seaweed_bucket")
    return "s3", request.getfixturevalue("s3_server"), request.getfixturevalue("make_bucket")


def _retain_until(client, bucket: str, key: str) -> datetime:
    """The first version's retain-until, read with plain boto3."""
    versions = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    first = [v for v in versions if v["Key"] == key][-1]
    head = client.head_object(Bucket=bucket, Key=key, VersionId=first["VersionId"])
    return head["ObjectLockRetainUntilDate"].astimezone(UTC)


def _referenced(repo: Repository, info) -> set[str]:
    """Every pack and index file holding a blob the snapshot needs."""
    index = repo.index(refresh=True)
    blobs = set(info.tree)
    for entry in SnapshotReader(repo, info).entries():
        blobs.update(entry.chunks)
    packs = {index.get(b).pack for b in blobs}
    indexes = {name for name, listed in index.files.items() if packs.intersection(listed)}
    return {pack_name(p) for p in packs} | indexes


def _tree(root, seed: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"new-{seed}.bin").write_bytes(os.urandom(300_000))


def test_reused_packs_are_locked_as_long_as_the_newest_snapshot(endpoint, tmp_path):
    """Snapshot 2 (taken after lock_days went from 1 to 3) reuses snapshot 1's packs: every
    object it references ends up locked no earlier than snapshot 2 itself, and a third
    snapshot right after extends nothing (the slack covers it)."""
    name, url, make_bucket = endpoint
    bucket = make_bucket()
    client = boto3.client("s3", endpoint_url=url)
    src = tmp_path / "src"
    _tree(src, 1)
    trust = name == "s3"  # moto lets a client shorten COMPLIANCE retention
    storage1 = open_storage(f"s3://{bucket}/repo", endpoint_url=url, lock_days=1, trust_endpoint=trust)
    repo, key, recovery = Repository.create(storage1, lock_days=1, cache_dir=tmp_path / "cache")
    first = backup_paths(repo, "files", [src])
    old_until = _retain_until(client, bucket, f"repo/{snapshot_name(first.id)}")

    _tree(src, 2)
    storage3 = open_storage(f"s3://{bucket}/repo", endpoint_url=url, lock_days=3, trust_endpoint=trust)
    later = Repository.open(storage3, backup_key=key, cache_dir=tmp_path / "cache")  # same writer
    second = backup_paths(later, "files", [src])
    snap_until = _retain_until(client, bucket, f"repo/{snapshot_name(second.id)}")
    assert snap_until > old_until + timedelta(days=1)
    reader = Repository.open(storage3, recovery_key=recovery)  # trees need the recovery key
    referenced = _referenced(reader, second)
    reused = [n for n in referenced if _retain_until(client, bucket, f"repo/{n}") < snap_until]
    assert referenced and not reused
    # snapshot 1's data packs were among them and had to be extended
    first_packs = _referenced(reader, first) & referenced
    assert first_packs and storage3.retention_requests >= len(first_packs)

    before = storage3.retention_requests
    backup_paths(later, "files", [src])
    assert storage3.retention_requests == before
    assert later.check().ok


def test_check_reports_an_object_locked_shorter_than_its_snapshot(s3_server, make_bucket, tmp_path):
    """moto lets a client shorten COMPLIANCE retention (AWS and SeaweedFS refuse): check
    must notice a pack that would expire before the snapshot that needs it."""
    bucket = make_bucket()
    storage = open_storage(f"s3://{bucket}/repo", endpoint_url=s3_server, lock_days=2, trust_endpoint=True)
    repo, _, recovery = Repository.create(storage, lock_days=2, cache_dir=tmp_path / "cache")
    src = tmp_path / "src"
    _tree(src, 1)
    info = backup_paths(repo, "files", [src])
    reader = Repository.open(storage, recovery_key=recovery)
    victim = sorted(n for n in _referenced(reader, info) if n.startswith("data/"))[0]
    client = boto3.client("s3", endpoint_url=s3_server)
    key = f"repo/{victim}"
    version = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"][-1]["VersionId"]
    client.put_object_retention(
        Bucket=bucket,
        Key=key,
        VersionId=version,
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": datetime.now(UTC) + timedelta(hours=1)},
    )
    fresh = open_storage(f"s3://{bucket}/repo", endpoint_url=s3_server, lock_days=2, trust_endpoint=True)
    report = Repository.open(fresh, recovery_key=recovery).check()
    short = [p for p in report.problems if p.kind == "retention-short"]
    assert [p.object for p in short] == [victim]
    assert info.short_id in short[0].snapshots and "retained until" in short[0].message


def test_seaweed_backup_identity_extends_but_cannot_shorten_or_delete(
    seaweed, make_seaweed_bucket, tmp_path, monkeypatch
):
    """lifeboat running as the restricted backup identity backs up and extends retention;
    the same credentials can neither shorten a locked version's retention nor delete it,
    and the repository still restores byte for byte."""
    bucket = make_seaweed_bucket()
    backup = seaweed.identity("backup")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", backup.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", backup.secret_key)
    storage = open_storage(f"s3://{bucket}/repo", endpoint_url=seaweed.endpoint, lock_days=1)
    repo, key, recovery = Repository.create(storage, lock_days=1, cache_dir=tmp_path / "cache")
    src = tmp_path / "src"
    _tree(src, 1)
    backup_paths(repo, "files", [src])
    longer = open_storage(f"s3://{bucket}/repo", endpoint_url=seaweed.endpoint, lock_days=3)
    # the same writer (its own chunk-id key) reuses its packs and extends their retention
    info = backup_paths(Repository.open(longer, backup_key=key), "files", [src])
    assert longer.retention_requests > 0
    client = boto3.client("s3", endpoint_url=seaweed.endpoint)  # the backup identity's
    reader = Repository.open(storage, recovery_key=recovery)
    for name in sorted(_referenced(reader, info)):
        key = f"repo/{name}"
        version = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"][-1]["VersionId"]
        with pytest.raises(ClientError, match="AccessDenied"):
            client.put_object_retention(
                Bucket=bucket,
                Key=key,
                VersionId=version,
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": datetime.now(UTC) + timedelta(hours=1)},
            )
        with pytest.raises(ClientError, match="AccessDenied"):
            client.delete_object(Bucket=bucket, Key=key, VersionId=version)
    assert reader.check().ok
    out = tmp_path / "out"
    restore_snapshot(reader, reader.find_snapshot("files"), out)
    assert (out / "src" / "new-1.bin").read_bytes() == (src / "new-1.bin").read_bytes()


def test_init_refuses_an_endpoint_that_lets_locks_be_shortened(
    s3_server, make_bucket, seaweed, make_seaweed_bucket
):
    """moto accepts a shorter COMPLIANCE retention: init refuses it with one clear error
    unless trusted explicitly; SeaweedFS passes every probe; check on an untrusted moto
    repository reports it."""
    moto = open_storage(f"s3://{make_bucket()}/repo", endpoint_url=s3_server, lock_days=1)
    with pytest.raises(ConfigError, match="could be shortened") as info:
        Repository.create(moto)
    assert "trust_endpoint" in (info.value.hint or "")
    assert not moto.exists("config")
    # what the probes leave (a locked probe moto refused to delete) is no lock and no data
    assert {o.name.split("-")[0] for o in moto.list("")} <= {"locks/probe"}
    assert list_locks(moto) == []

    trusted = open_storage(moto.url, endpoint_url=s3_server, lock_days=1, trust_endpoint=True)
    _, _, recovery = Repository.create(trusted)
    report = Repository.open(moto, recovery_key=recovery).check()
    assert [p.kind for p in report.problems] == ["untrusted-endpoint"]

    weed = open_storage(f"s3://{make_seaweed_bucket()}/repo", endpoint_url=seaweed.endpoint, lock_days=1)
    assert weed.probe() == []
    _, _, recovery = Repository.create(weed)
    assert Repository.open(weed, recovery_key=recovery).check().ok


def test_init_refuses_an_endpoint_that_ignores_if_none_match(s3_server, make_bucket, tmp_path):
    """In front of moto, a proxy drops If-None-Match (Ceph RGW 16.2 ignores it on
    versioned buckets): init refuses the endpoint in one line, nothing is created, and
    `lifeboat init` exits 2 with the same message and no traceback."""
    proxy = StallProxy(s3_server)
    proxy.drop_headers = {"if-none-match"}
    try:
        bucket = make_bucket(object_lock=False)
        storage = open_storage(f"s3://{bucket}/repo", endpoint_url=proxy.endpoint)
        with pytest.raises(ConfigError, match=r"If-None-Match: \* of an existing key was accepted"):
            Repository.create(storage)
        assert not storage.exists("config")
        policy = write_policy(
            tmp_path,
            tmp_path,
            f"s3://{bucket}/repo",
            endpoint_url=proxy.endpoint,
        )
        runner = LifeboatCli(policy, cwd=tmp_path, timeout=120)
        proc = runner.run("init", "--recovery-key-out", "rk", check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("lifeboat: error: the S3 endpoint of s3://")
        assert "Traceback" not in proc.stderr and "trust_endpoint" in proc.stderr
    finally:
        proxy.close()


def test_forget_and_prune_shorten_nothing(seaweed, make_seaweed_bucket, tmp_path):
    """Under Object Lock, forget and prune delete nothing locked and leave every object's
    retain-until where it was or later (SeaweedFS, which refuses shortening anyway, so a
    failed attempt would surface as an error)."""
    bucket = make_seaweed_bucket()
    storage = open_storage(f"s3://{bucket}/repo", endpoint_url=seaweed.endpoint, lock_days=1)
    repo, _, recovery = Repository.create(storage, lock_days=1, cache_dir=tmp_path / "cache")
    src = tmp_path / "src"
    for seed in (1, 2, 3):
        _tree(src, seed)
        backup_paths(repo, "files", [src])
    client = boto3.client("s3", endpoint_url=seaweed.endpoint)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="repo/")["Contents"]]
    locked = [k for k in keys if not k.startswith("repo/locks/")]
    before = {k: _retain_until(client, bucket, k) for k in locked}
    admin = Repository.open(storage, recovery_key=recovery)
    report = admin.forget(KeepRules(last=1))
    assert len(report.locked) == 2 and not report.removed
    admin.prune()
    after = {k: _retain_until(client, bucket, k) for k in locked}
    assert after.keys() == before.keys()
    assert all(after[k] >= before[k] for k in before)
    assert len(Repository.open(storage, recovery_key=recovery).snapshots()) == 3


def test_a_sharded_snapshot_locks_the_packs_its_shards_reused(s3_server, make_bucket, tmp_path):
    """The commit of a sharded backup cannot read the shards' tree parts, yet every pack
    their data lies in (here: packs an older snapshot wrote) must end up locked no earlier
    than the sharded snapshot itself."""
    bucket = make_bucket()
    client = boto3.client("s3", endpoint_url=s3_server)
    data = [os.urandom(300_000) for _ in range(3)]
    storage1 = open_storage(f"s3://{bucket}/repo", endpoint_url=s3_server, lock_days=1, trust_endpoint=True)
    repo, key, recovery = Repository.create(storage1, lock_days=1, cache_dir=tmp_path / "cache")
    with repo.backup("media", "objects") as session:
        for i, body in enumerate(data):
            session.add_bytes(f"o{i}", body)
        first = session.commit()
    storage3 = open_storage(f"s3://{bucket}/repo", endpoint_url=s3_server, lock_days=3, trust_endpoint=True)
    later = Repository.open(storage3, backup_key=key, cache_dir=tmp_path / "cache")  # same writer
    parts, stats, packs = [], [], []
    for i, body in enumerate(data):  # one shard per object, each reusing snapshot 1's chunks
        with later.backup("media", "objects") as shard:
            shard.add_bytes(f"o{i}", body)
            tree, shard_stats, shard_packs = shard.finish_fragment()
        parts.append(tree)
        stats.append(shard_stats)
        packs += shard_packs
    with later.backup("media", "objects") as session:
        sharded = session.commit_fragments(parts, stats, packs)
    snap_until = _retain_until(client, bucket, f"repo/{snapshot_name(sharded.id)}")
    reader = Repository.open(storage3, recovery_key=recovery)  # trees need the recovery key
    referenced = _referenced(reader, sharded)
    reused = {n for n in _referenced(reader, first) if n.startswith("data/")} & referenced
    assert reused  # the shards' data lies in snapshot 1's packs, locked for 1 day at first
    assert all(_retain_until(client, bucket, f"repo/{n}") >= snap_until for n in referenced)


def test_a_copy_keeps_retention_dates_of_its_own(tmp_path):
    """A copy has the primary's id and keys, so its caches sit beside the primary's: the
    retain-until dates are the one cache that is the store's, not the repository's. Shared,
    the primary's longer dates would have been taken for the copy's after a failover to it,
    and its packs never extended (review)."""
    from lifeboat.repo.copy import copy_repository
    from lifeboat.repo.immutability import RetentionCache, retention_cache_name

    src, cache = tmp_path / "src", tmp_path / "cache"
    _tree(src, 1)
    primary = open_storage(f"file://{tmp_path / 'primary'}")
    repo, key, _recovery = Repository.create(primary, cache_dir=cache)
    backup_paths(repo, "files", [src])
    copy = open_storage(f"file://{tmp_path / 'copy'}")
    copy_repository(primary, copy)
    copied = Repository.open(copy, backup_key=key, cache_dir=cache)
    assert copied.id == repo.id and copied.cache_dir == repo.cache_dir

    known = RetentionCache(repo)
    known.known["data/00/pack"] = 4e9
    known.save()
    assert RetentionCache(Repository.open(primary, backup_key=key, cache_dir=cache)).known == known.known
    assert RetentionCache(copied).known == {}
    # s3://bucket/prefix names no endpoint: a copy of the same name at another provider
    assert retention_cache_name("s3://acme/lb", "https://s3.eu-west-1.example") != retention_cache_name(
        "s3://acme/lb", "https://s3.wasabi.example"
    )
