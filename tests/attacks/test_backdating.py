"""A compromised backup host lying about time on S3 storage (issue #14). The attacker holds
only what that host has: its writer key file and the bucket's credentials. It sets its own
clock back (the header's time is whatever its code writes) or copies genuine signed objects
to new names. The store dates every object itself (SeaweedFS, real ``LastModified``), which
no writer can choose. The defender's side is the real `lifeboat` executable: a back-dated
snapshot is refused by every reader (never listed, never "latest", counted by no `forget`
bucket) and `check` and `status` report it, naming the writer, with exit 1; a revoked key
cannot back-date its way into its valid window; a replayed object is refused and reported."""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from lifeboat.crypto.keys import load_backup_key
from lifeboat.repo import Repository
from lifeboat.repo.format import ref_name, snapshot_name
from lifeboat.storage import open_storage
from lifeboat.storage.base import Storage
from tests.attacks.test_forged_history import GENUINE, Site, forge, refusals
from tests.harness import Clock, PolicyBuilder
from tests.harness.wait import wait_until

DAY = 86400
HOUR = 3600


@dataclass
class S3Site(Site):
    """The defender's site on a SeaweedFS bucket."""

    bucket: str = ""
    endpoint: str = ""


@pytest.fixture
def s3site(tmp_path: Path, clock: Clock, seaweed, make_seaweed_bucket: Callable[..., str]) -> S3Site:  # type: ignore[no-untyped-def]
    bucket = make_seaweed_bucket(object_lock=False)  # versioned: forget may delete
    for asset in ("app", "web"):
        (tmp_path / asset).mkdir()
        (tmp_path / asset / "config.txt").write_bytes(GENUINE)
    policy = (
        PolicyBuilder()
        .s3_repository(seaweed.endpoint, bucket)
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 1})
        .files("app", [tmp_path / "app"])
        .files("web", [tmp_path / "web"])
        .write(tmp_path / "lifeboat.toml")
    )
    site = S3Site(policy=policy, clock=clock, root=tmp_path, bucket=bucket, endpoint=seaweed.endpoint)
    site.env["LIFEBOAT_ACTOR"] = "test"
    site.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    return site


def storage_of(site: S3Site) -> Storage:
    """The bucket, with the credentials the backup host has."""
    return open_storage(f"s3://{site.bucket}/repo", endpoint_url=site.endpoint)


def attacker(site: S3Site, keyfile: Path) -> Repository:
    """The compromised host's handle: a key file and the bucket, nothing else."""
    return Repository.open(storage_of(site), backup_key=load_backup_key(keyfile))


def own_keyfile(site: Site) -> Path:
    return site.root / "keys" / "backup.key"


def genuine_writer(site: Site) -> str:
    [name] = [w["name"] for w in site.json("keys", "writers") if w["revoked"] is None]
    return str(name)


def test_a_backdated_snapshot_of_its_own_asset_is_reported_and_counted_by_no_bucket(
    s3site: S3Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = s3site
    older = site.backup("web")
    newer = site.backup("web")
    repo = attacker(site, own_keyfile(site))  # this host's own key, every asset
    honest = forge(repo, "web", GENUINE)  # the same code and key, clock untouched: accepted
    backdated = []
    for days in (3, 10):  # e.g. to fill older retention buckets with the attacker's data
        monkeypatch.setenv("LIFEBOAT_CLOCK_OFFSET", str(-days * DAY))
        backdated.append(forge(repo, "web"))
    monkeypatch.delenv("LIFEBOAT_CLOCK_OFFSET")

    assert site.snapshot_ids("web") == [older, newer, honest]
    assert site.restored("web", "config.txt") == GENUINE
    writer = genuine_writer(site)
    problems = site.check_problems()
    for forged in backdated:
        [message] = refusals(problems, forged)
        assert writer in message and "back-dated" in message
    breaches = site.status_breaches()
    for forged in backdated:
        assert any(forged[:12] in b and "back-dated" in b and writer in b for b in breaches), breaches
    forgot = site.json("forget", *site.recovery)
    assert forgot["kept"] == [honest] and set(forgot["removed"]) == {older, newer}
    assert not set(backdated) & set(forgot["kept"] + forgot["removed"])  # counted by no bucket
    assert site.snapshot_ids("web") == [honest]


def test_a_revoked_writer_cannot_backdate_into_its_valid_window(
    s3site: S3Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = s3site
    out = site.root / "host2" / "writer.key"
    with site.clock.shifted(-6 * HOUR):  # issued six hours ago (by the recovery side's clock)
        site.json("keys", "add-writer", "web-1", "--assets", "web", "--out", str(out), *site.recovery)
    before = forge(attacker(site, out), "web", b"before the revocation\n")
    site.json("keys", "revoke-writer", "web-1", *site.recovery)
    # S3 LastModified counts whole seconds: the forgery lands in a second that starts after
    # the revocation, as any write more than a second later does
    next_second = math.floor(time.time()) + 1
    wait_until(lambda: time.time() >= next_second, "the next whole second", interval=0.01)

    # After its revocation, web-1 dates a snapshot an hour back: inside its valid window by
    # the claimed time, after the revocation by the store's LastModified.
    monkeypatch.setenv("LIFEBOAT_CLOCK_OFFSET", str(-HOUR))
    after = forge(attacker(site, out), "web")
    monkeypatch.delenv("LIFEBOAT_CLOCK_OFFSET")

    assert site.snapshot_ids("web") == [before]  # what it signed in time stays trusted
    [message] = refusals(site.check_problems(), after)
    assert "web-1" in message and "writer revoked" in message
    # this host's own key cannot open web-1's sealed header: judged by its signature and the
    # store's time alone
    assert any(after[:12] in b and "web-1" in b and "writer revoked" in b for b in site.status_breaches())


def test_replayed_signed_objects_under_new_names_are_refused_and_reported(s3site: S3Site) -> None:
    site = s3site
    genuine = site.backup("app")
    storage = storage_of(site)
    repo = attacker(site, own_keyfile(site))
    repo.put_ref("wal/app", "000000010000000000000001", b"a genuine segment")
    # Replays: the stored bytes of genuine signed objects, under names of the attacker's choosing.
    header = storage.get(snapshot_name(genuine))
    replayed_snapshot = secrets.token_hex(32)
    storage.put(snapshot_name(replayed_snapshot), header)
    index = min(o.name for o in storage.list("index/"))
    replayed_index = f"index/{secrets.token_hex(32)}"
    storage.put(replayed_index, storage.get(index))
    ref = storage.get(ref_name("wal/app", "000000010000000000000001"))
    replayed_ref = ref_name("wal/app", "000000010000000000000002")
    storage.put(replayed_ref, ref)

    listed = site.json("snapshots", *site.recovery, check=False)  # exit 1: a damaged header
    assert [s["id"] for s in listed if not s.get("damaged")] == [genuine]
    assert [s["problem"] for s in listed if s["id"] == replayed_snapshot] == [
        f"snapshot {replayed_snapshot[:12]} does not match its name (content hash differs)"
    ]
    assert site.restored("app", "config.txt") == GENUINE
    proc = site.run("check", "--json", *site.recovery, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    flagged = {p["object"]: p["kind"] for p in json.loads(proc.stdout)["problems"]}
    assert (
        snapshot_name(replayed_snapshot) in flagged and replayed_index in flagged and replayed_ref in flagged
    )
    assert snapshot_name(genuine) not in flagged and index not in flagged  # the originals are fine
    assert ref_name("wal/app", "000000010000000000000001") not in flagged


def test_a_copy_judges_snapshots_by_the_source_write_times_and_still_catches_backdating(
    tmp_path: Path,
    clock: Clock,
    seaweed,
    make_seaweed_bucket: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # type: ignore[no-untyped-def]
    """`lifeboat copy` gives every object a new LastModified: a genuine day-old snapshot of a
    local-directory primary is not back-dated in the S3 copy (its copy record says the source
    had no write time to judge by), while one the attacker writes into the copy itself is."""
    bucket = make_seaweed_bucket(object_lock=False)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "config.txt").write_bytes(GENUINE)
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .copy("offsite", f"s3://{bucket}/repo", endpoint_url=seaweed.endpoint)
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 1})
        .files("app", [tmp_path / "app"])
        .write(tmp_path / "lifeboat.toml")
    )
    site = S3Site(policy=policy, clock=clock, root=tmp_path, bucket=bucket, endpoint=seaweed.endpoint)
    site.env["LIFEBOAT_ACTOR"] = "test"
    with clock.shifted(-2 * DAY):  # the writer was issued two days ago
        site.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    with clock.shifted(-DAY):
        old = site.backup("app")
    new = site.backup("app")
    site.run("copy", "offsite")
    offsite = ["--repository", "offsite", *site.recovery]
    assert [s["id"] for s in site.json("snapshots", *offsite)] == [old, new]

    repo = attacker(site, own_keyfile(site))  # the copy's bucket and this host's key
    monkeypatch.setenv("LIFEBOAT_CLOCK_OFFSET", str(-1.5 * DAY))
    backdated = forge(repo, "app")
    monkeypatch.delenv("LIFEBOAT_CLOCK_OFFSET")
    assert [s["id"] for s in site.json("snapshots", *offsite)] == [old, new]
    proc = site.run("check", "--json", *offsite, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    [message] = refusals(report["problems"], backdated)
    assert "back-dated" in message
    assert any("2 snapshot(s) are judged by the write times of copy records" in w for w in report["warnings"])
