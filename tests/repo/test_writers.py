"""Writer identities through the repository API: the registry written at create, the clock
skew rule, registry rollback, writer-less keys, and legacy (pre-registry) repositories."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from lifeboat.errors import ConfigError, IntegrityError, KeyError_, NotFoundError
from lifeboat.repo import Repository
from lifeboat.repo.model import SnapshotInfo
from lifeboat.repo.snapshots import cached_history
from lifeboat.services.keys import issue_writer_key
from lifeboat.storage import open_storage


def backup(repo: Repository, asset: str = "app", data: bytes = b"x" * 100) -> SnapshotInfo:
    with repo.backup(asset, "files") as session:
        session.add_bytes("f.bin", data)
        return session.commit()


def test_create_pins_the_root_and_issues_a_first_writer_for_every_asset(tmp_path: Path) -> None:
    repo, key, recovery = Repository.create(open_storage(f"file://{tmp_path / 'repo'}"), writer="db-1")
    assert key.writer == "db-1" and key.generation == 1 and key.signing is not None
    config = json.loads((tmp_path / "repo" / "config").read_text())
    assert config["root_public"] and config["clock_skew_s"] == 300
    assert sorted(os.listdir(tmp_path / "repo" / "records" / "registry")) == ["00000001"]
    snaps = [backup(repo, "app"), backup(repo, "other")]
    reader = Repository.open(repo.storage, recovery_key=recovery)
    assert [s.id for s in reader.snapshots()] == [s.id for s in snaps]
    assert reader.trust() is not None and reader.check().ok


def test_the_skew_allows_a_clock_slightly_ahead_and_refuses_one_far_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, _, _ = Repository.create(open_storage(f"file://{tmp_path / 'repo'}"))
    monkeypatch.setenv("LIFEBOAT_CLOCK_OFFSET", "120")
    ahead = backup(repo, data=b"a")
    monkeypatch.setenv("LIFEBOAT_CLOCK_OFFSET", "600")
    far = backup(repo, data=b"b")
    monkeypatch.delenv("LIFEBOAT_CLOCK_OFFSET")
    listing = repo.snapshot_listing()
    assert [s.id for s in listing.accepted] == [ahead.id]
    assert [(r.id, r.reason.startswith("dated in the future")) for r in listing.refused] == [(far.id, True)]
    # a later reader, past the time it claims, accepts it
    monkeypatch.setenv("LIFEBOAT_CLOCK_OFFSET", "700")
    assert [s.id for s in repo.snapshots()] == [ahead.id, far.id]


def test_a_registry_rolled_back_below_what_this_host_saw_is_refused(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage)
    admin = Repository.open(storage, recovery_key=recovery)
    issue_writer_key(admin, "web-1", ["web"])
    cache = tmp_path / "cache"
    Repository.open(storage, recovery_key=recovery, cache_dir=cache).snapshots()  # checkpoint: version 2
    newest = tmp_path / "repo" / "records" / "registry" / "00000002"
    os.chmod(newest, 0o644)
    newest.unlink()  # the storage-level attacker deletes the version that admitted (or revoked) a key
    with pytest.raises(IntegrityError, match="rolled back"):
        Repository.open(storage, recovery_key=recovery, cache_dir=cache).snapshots()


def test_a_key_without_a_writer_identity_cannot_back_up_into_a_signed_repository(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, key, _ = Repository.create(storage)
    bare = replace(key, writer=None, signing_seed=None)
    with pytest.raises(KeyError_, match="no writer identity"):
        backup(Repository.open(storage, backup_key=bare))


def test_a_legacy_repository_is_refused_by_every_key(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, key, recovery = Repository.create(storage)
    config_path = tmp_path / "repo" / "config"
    config = json.loads(config_path.read_text())
    del config["root_public"]  # what a repository from before writer identities looks like
    os.chmod(config_path, 0o644)
    config_path.write_text(json.dumps(config))
    legacy_key = replace(key, writer=None, signing_seed=None, chunk_id_key=None)
    for opened in ({"backup_key": legacy_key}, {"backup_key": key}, {"recovery_key": recovery}):
        with pytest.raises(ConfigError, match="repository format 1 predates signed writers"):
            Repository.open(storage, **opened)  # type: ignore[arg-type]


def test_create_after_one_killed_between_registry_and_config_succeeds(tmp_path: Path) -> None:
    Repository.create(open_storage(f"file://{tmp_path / 'first'}"))
    orphan = tmp_path / "second" / "records" / "registry"
    orphan.mkdir(parents=True)
    (orphan / "00000001").write_bytes((tmp_path / "first" / "records" / "registry" / "00000001").read_bytes())
    repo, _, recovery = Repository.create(open_storage(f"file://{tmp_path / 'second'}"))
    backup(repo)
    reader = Repository.open(repo.storage, recovery_key=recovery)
    assert reader.trust() is not None and len(reader.snapshots()) == 1


def test_choosing_from_the_cached_history_skips_a_newer_refused_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`backup` (its parent) and `restore` choose from the local summary, judging only the
    snapshots they walk past: a refused newest one is walked past, never chosen."""
    repo, _, _ = Repository.create(open_storage(f"file://{tmp_path / 'repo'}"), cache_dir=tmp_path / "cache")
    older = backup(repo, data=b"a")
    monkeypatch.setenv("LIFEBOAT_CLOCK_OFFSET", "600")  # beyond the 300 s skew
    far = backup(repo, data=b"b")
    monkeypatch.delenv("LIFEBOAT_CLOCK_OFFSET")
    repo.snapshot_listing()  # leaves the summary every later choice is made from
    assert cached_history(repo.storage, repo.metadata, repo.snapshot_cache(), repo.trust()) is not None

    assert repo.latest_snapshot_id("app") == older.id
    assert repo.find_snapshot("app").id == older.id
    assert repo.find_snapshot("app", at=far.time).id == older.id
    with pytest.raises(IntegrityError, match="dated in the future"):
        repo.find_snapshot("app", snapshot_id=far.id[:12])
    with pytest.raises(NotFoundError, match="no snapshot of app at or before"):
        repo.find_snapshot("app", at=older.time - timedelta(seconds=1))
    assert repo.latest_snapshot_id("other") is None

    monkeypatch.setenv("LIFEBOAT_CLOCK_OFFSET", "700")  # a later reader, past the time it claims
    assert repo.latest_snapshot_id("app") == far.id
    assert repo.find_snapshot("app", at=far.time - timedelta(seconds=1)).id == older.id


def test_a_header_copy_planted_under_another_name_does_not_stop_the_choice(tmp_path: Path) -> None:
    """Somebody with write access to the storage plants a copy of the newest header under
    snapshots/x/: backups and restores still choose the genuine header (sorting the two by
    their checks raised TypeError), and the copy is reported, never listed as a snapshot."""
    root = tmp_path / "repo"
    repo, _, _ = Repository.create(open_storage(f"file://{root}"), cache_dir=tmp_path / "cache")
    older, newest = backup(repo, data=b"a"), backup(repo, data=b"b")
    repo.snapshot_listing()  # leaves the summary every later choice is made from
    forged = bytearray((root / "snapshots" / newest.id).read_bytes())
    forged[-1] ^= 1  # the last byte of the signature trailer
    (root / "snapshots" / "x").mkdir()
    (root / "snapshots" / "x" / newest.id).write_bytes(bytes(forged))

    assert repo.latest_snapshot_id("app") == newest.id
    assert repo.find_snapshot("app").id == newest.id
    assert repo.find_snapshot("app", snapshot_id=older.id[:12]).id == older.id
    assert backup(repo, data=b"c").parent == newest.id
    listing = repo.snapshot_listing()
    assert listing.refused == [] and list(listing.damaged) == [f"snapshots/x/{newest.id}"]
    assert "not where a snapshot header is stored" in listing.damaged[f"snapshots/x/{newest.id}"]

    # an exact copy, its signature intact, is no second snapshot either: a lookup by id
    # finds one, and the copy is reported
    (root / "snapshots" / "x" / newest.id).unlink()
    (root / "snapshots" / "x" / newest.id).write_bytes((root / "snapshots" / newest.id).read_bytes())
    assert repo.find_snapshot("app", snapshot_id=newest.id[:12]).id == newest.id
    assert [s.id for s in repo.snapshots("app")].count(newest.id) == 1
    assert not repo.check().ok


def damage_in_place(header: Path) -> None:
    """One bit of the header flipped, its size and time kept."""
    kept = header.stat()
    header.chmod(0o600)
    damaged = bytearray(header.read_bytes())
    damaged[40] ^= 1
    header.write_bytes(bytes(damaged))
    os.utime(header, ns=(kept.st_atime_ns, kept.st_mtime_ns))


def test_a_header_damaged_in_place_is_never_chosen_from_the_cached_history(tmp_path: Path) -> None:
    """A local choice takes the headers the summary holds by name alone (no stat per
    header): the newest header rewritten in place is found damaged when it is read, and a
    restore passes it over to the newest intact one; asked for by id, it is said to be
    damaged, and with every header damaged none is said to be missing."""
    root = tmp_path / "repo"
    repo, key, _ = Repository.create(open_storage(f"file://{root}"), cache_dir=tmp_path / "cache")
    older, newest = backup(repo, data=b"a"), backup(repo, data=b"b")
    repo.snapshot_listing()  # leaves the summary every later choice is made from
    damage_in_place(root / "snapshots" / newest.id)
    assert repo.find_snapshot("app").id == older.id
    assert repo.find_snapshot("app", at=newest.time).id == older.id
    with pytest.raises(IntegrityError, match=f"snapshot {newest.id[:12]} does not match its name"):
        repo.find_snapshot("app", snapshot_id=newest.id[:12])

    damage_in_place(root / "snapshots" / older.id)
    with pytest.raises(
        IntegrityError, match=r"every one of the 2 snapshot\(s\) of app to choose from is damaged"
    ):
        repo.find_snapshot("app")
    assert not repo.check().ok

    # without a cache every header is read: none is restorable, and the damaged one is
    # said to be damaged, not absent
    uncached = Repository.open(repo.storage, backup_key=key)
    with pytest.raises(
        NotFoundError, match=r"no snapshot that can be read, and 2 snapshot header\(s\) of the"
    ):
        uncached.find_snapshot("app")
    with pytest.raises(IntegrityError, match=f"snapshot {newest.id[:12]} does not match its name"):
        uncached.find_snapshot("app", snapshot_id=newest.id[:12])
