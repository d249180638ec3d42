"""The repository on a directory and on a real S3 server: round trips, dedup, secrecy, damage, retention."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lifeboat.assets.files.tree import backup_paths, restore_snapshot
from lifeboat.errors import AlreadyExistsError, IntegrityError, KeyError_, RestoreError
from lifeboat.repo import KeepRules, Repository, select_keep
from lifeboat.repo.model import SnapshotInfo, SnapshotStats
from lifeboat.storage.base import Storage
from tests.conftest import open_backend
from tests.harness.settle import settle
from tests.storage.test_conformance import stored_sha256


# The repository API on a directory and on a real S3 server (SeaweedFS). moto stays in the
# storage conformance suite (tests/storage): through it these tests cost a minute more.
@pytest.fixture(params=["file", "seaweed"])
def storage_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    storage = open_backend(request, request.param, tmp_path)
    yield storage
    storage.close()


CANARY = b"CANARY-7f3a9c-never-in-the-repository"


def make_tree(root: Path, big_size: int = 8 << 20) -> None:
    rng = random.Random(42)
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "random.bin").write_bytes(rng.randbytes(3 << 20))
    (root / "text.txt").write_bytes(b"line with a secret: " + CANARY + b"\n" * 1000)
    (root / "empty").write_bytes(b"")
    (root / "sub" / "ünïcödé –名前.txt").write_text("unicode name\n")
    (root / "sub" / "deeper" / "big.dat").write_bytes(rng.randbytes(big_size))
    os.symlink("../text.txt", root / "sub" / "link-to-text")
    os.chmod(root / "text.txt", 0o640)
    os.utime(root / "random.bin", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


def tree_state(root: Path) -> dict[str, tuple[str, int, int, bytes]]:
    state = {}
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        rel = str(path.relative_to(root))
        if path.is_symlink():
            state[rel] = ("link", st.st_mode & 0o7777, 0, os.readlink(path).encode())
        elif path.is_dir():
            state[rel] = ("dir", st.st_mode & 0o7777, 0, b"")
        else:
            state[rel] = ("file", st.st_mode & 0o7777, st.st_mtime_ns, path.read_bytes())
    return state


@pytest.fixture
def repo_keys(storage_backend, tmp_path):
    repo, backup_key, recovery = Repository.create(storage_backend, cache_dir=tmp_path / "cache")
    return storage_backend, repo, backup_key, recovery


def test_round_trip_is_byte_identical_with_metadata(repo_keys, tmp_path):
    storage, repo, _, recovery = repo_keys
    src = tmp_path / "src" / "data"
    src.mkdir(parents=True)
    make_tree(src)
    info = backup_paths(repo, "config", [src])
    reader_repo = Repository.open(storage, recovery_key=recovery)
    out = tmp_path / "out"
    restore_snapshot(reader_repo, reader_repo.find_snapshot("config"), out)
    assert tree_state(out / "data") == tree_state(src)
    assert info.stats.files == 5


def test_packs_on_s3_carry_their_id_as_the_checksum_the_store_checked(request, seaweed, tmp_path):
    """Every pack a backup puts into a bucket went up with its id, its SHA-256, as the
    request's checksum: the store checked the bytes against it and keeps it."""
    storage = open_backend(request, "seaweed", tmp_path)
    repo, _, _ = Repository.create(storage, cache_dir=tmp_path / "cache")
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src, big_size=1 << 20)
    backup_paths(repo, "config", [src])
    packs = [obj.name for obj in storage.list("data/")]
    assert packs
    for name in packs:
        assert stored_sha256(seaweed.endpoint, storage.bucket, f"repo/{name}") == name.rsplit("/", 1)[-1]


def test_canary_never_reaches_repository_bytes(repo_keys, tmp_path):
    storage, repo, _, _ = repo_keys
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src, big_size=1 << 20)
    backup_paths(repo, "config", [src])
    for obj in storage.list(""):
        data = storage.get(obj.name)
        assert CANARY not in data, obj.name
        assert "ünïcödé".encode() not in data, obj.name


def test_backup_key_alone_cannot_read_anything(repo_keys, tmp_path):
    storage, repo, backup_key, _ = repo_keys
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(CANARY)
    info = backup_paths(repo, "config", [src])
    write_only = Repository.open(storage, backup_key=backup_key)
    assert [s.id for s in write_only.snapshots()] == [info.id]  # listing works
    with pytest.raises(KeyError_, match="recovery key"):
        write_only.reader(info).entries()
    for blob_id in info.tree:
        with pytest.raises(KeyError_):
            write_only.read_blob(blob_id)


def test_wrong_recovery_key_is_refused(repo_keys, tmp_path):
    storage, _, _, _ = repo_keys
    _, _, other_recovery = Repository.create(_other_storage(tmp_path))
    with pytest.raises(KeyError_, match="does not belong to this repository"):
        Repository.open(storage, recovery_key=other_recovery)


def _other_storage(tmp_path: Path):
    from lifeboat.storage import open_storage

    return open_storage(str(tmp_path / "other-repo"))


def test_small_change_adds_about_its_size(repo_keys, tmp_path):
    _, repo, _, _ = repo_keys
    src = tmp_path / "src"
    src.mkdir()
    big = src / "big.dat"
    size = 64 << 20
    big.write_bytes(random.Random(1).randbytes(size))
    first = backup_paths(repo, "files", [src])
    with open(big, "r+b") as fh:  # change 1% in place
        fh.seek(size // 2)
        fh.write(os.urandom(size // 100))
    second = backup_paths(repo, "files", [src])
    assert first.stats.new_bytes >= size
    assert second.stats.new_bytes <= size * 0.03, second.stats
    assert second.stats.stored_bytes <= size * 0.03


def test_unchanged_files_are_not_read_again(repo_keys, tmp_path):
    _, repo, _, _ = repo_keys
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}").write_bytes(os.urandom(10_000))
    settle(src)
    backup_paths(repo, "files", [src])
    second = backup_paths(repo, "files", [src])
    assert second.stats.reused_files == 20
    assert second.stats.new_bytes == 0  # even the tree is identical, so deduplicated


def test_restore_refuses_non_empty_target(repo_keys, tmp_path):
    storage, repo, _, recovery = repo_keys
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    info = backup_paths(repo, "files", [src])
    target = tmp_path / "target"
    target.mkdir()
    (target / "precious").write_text("keep me")
    reader = Repository.open(storage, recovery_key=recovery)
    with pytest.raises(RestoreError, match="not empty"):
        restore_snapshot(reader, info, target)
    assert (target / "precious").read_text() == "keep me"
    restore_snapshot(reader, info, target, force=True)
    assert (target / "src" / "a").read_text() == "a"


def test_flipped_byte_in_any_object_is_detected_and_attributed(repo_keys, tmp_path):
    storage, repo, _, recovery = repo_keys
    src = tmp_path / "src"
    src.mkdir()
    (src / "victim.bin").write_bytes(os.urandom(200_000))
    backup_paths(repo, "files", [src])
    names = [o.name for o in storage.list("") if o.name.split("/")[0] in ("data", "index", "snapshots")]
    for name in names:
        original = storage.get(name)
        damaged = bytearray(original)
        damaged[len(damaged) // 2] ^= 0x01
        _replace(storage, name, bytes(damaged))
        report = Repository.open(storage, recovery_key=recovery).check(read_data=True)
        assert not report.ok, f"flip in {name} went unnoticed"
        kinds = {p.kind for p in report.problems}
        if name.startswith("data/"):
            assert kinds & {"corrupt-chunk", "corrupt-pack"}
        _replace(storage, name, original)
    assert Repository.open(storage, recovery_key=recovery).check(read_data=True).ok


def _replace(storage, name: str, data: bytes) -> None:
    """Tests only: simulate bit rot beneath the storage driver."""
    root = getattr(storage, "root", None)
    if root is not None:
        path = Path(root) / name
        os.chmod(path, 0o644)
        path.write_bytes(data)
        return
    # a new version on top would be ignored (reads pin the first version), so the damaged
    # bytes replace every version: what rot inside the endpoint would look like
    storage.delete(name)
    storage._client.put_object(Bucket=storage.bucket, Key=storage._key(name), Body=data)


def _damage_chunk(storage, recovery, info, suffix: str, chunk: int):
    """Flip a byte inside one chunk of the file ending in ``suffix``; returns its entry."""
    reader = Repository.open(storage, recovery_key=recovery)
    entry = next(e for e in reader.reader(info).entries() if e.path.endswith(suffix))
    loc = reader.index().get(entry.chunks[chunk])
    name = f"data/{loc.pack[:2]}/{loc.pack}"
    damaged = bytearray(storage.get(name))
    damaged[loc.offset + 40] ^= 0xFF
    _replace(storage, name, bytes(damaged))
    return entry


def test_missing_chunk_names_the_snapshots_and_files_that_need_it(repo_keys, tmp_path):
    """check holds only which blobs are used (not who uses each: a million took ~400 MB)
    and asks the trees again for the users of the ones it finds missing."""
    storage, repo, _, recovery = repo_keys
    src = tmp_path / "src"
    src.mkdir()
    (src / "victim.bin").write_bytes(os.urandom(300_000))
    first = backup_paths(repo, "files", [src])
    (src / "other.txt").write_text("another file, the victim unchanged\n")
    second = backup_paths(repo, "files", [src])
    reader = Repository.open(storage, recovery_key=recovery)
    entry = next(e for e in reader.reader(second).entries() if e.path.endswith("victim.bin"))
    pack = reader.index().get(entry.chunks[0]).pack
    storage.delete(f"data/{pack[:2]}/{pack}")

    report = Repository.open(storage, recovery_key=recovery).check(read_data=False)

    missing = [p for p in report.problems if p.kind == "missing-chunk"]
    assert {p.object for p in missing} >= set(entry.chunks[:1])
    assert {first.short_id, second.short_id} <= set(missing[0].snapshots)
    assert missing[0].files == ["src/victim.bin"]
    assert all(p.snapshots and p.files for p in missing)


def test_corrupt_chunk_names_snapshot_and_file(repo_keys, tmp_path):
    storage, repo, _, recovery = repo_keys
    src = tmp_path / "src"
    src.mkdir()
    (src / "victim.bin").write_bytes(os.urandom(3 << 20))
    info = backup_paths(repo, "files", [src])
    entry = _damage_chunk(storage, recovery, info, "victim.bin", 1)
    report = Repository.open(storage, recovery_key=recovery).check(read_data=True)
    chunk_problems = [p for p in report.problems if p.kind == "corrupt-chunk"]
    assert chunk_problems and info.short_id in chunk_problems[0].snapshots
    assert "src/victim.bin" in chunk_problems[0].files
    with pytest.raises(IntegrityError):
        Repository.open(storage, recovery_key=recovery).reader(info).read(entry)


def test_restore_with_a_corrupt_chunk_fails_and_leaves_no_partial_file(repo_keys, tmp_path):
    storage, repo, _, recovery = repo_keys
    src = tmp_path / "src"
    src.mkdir()
    (src / "victim.bin").write_bytes(os.urandom(5 << 20))
    for i in range(40):
        (src / f"small-{i}.txt").write_text(f"file {i}\n")
    info = backup_paths(repo, "files", [src])
    _damage_chunk(storage, recovery, info, "victim.bin", 2)
    target = tmp_path / "out"
    with pytest.raises(IntegrityError):
        restore_snapshot(Repository.open(storage, recovery_key=recovery), info, target)
    leftovers = [p.name for p in target.rglob("*") if p.name.endswith(".lifeboat-restore")]
    assert leftovers == []
    assert not (target / "src" / "victim.bin").exists()


def test_refs_are_idempotent_and_never_overwritten(repo_keys):
    storage, repo, _, recovery = repo_keys
    first = repo.put_ref("wal/db", "000000010000000000000001", b"segment" * 1000)
    again = repo.put_ref("wal/db", "000000010000000000000001", b"segment" * 1000)
    assert first.digest == again.digest
    with pytest.raises(AlreadyExistsError):
        repo.put_ref("wal/db", "000000010000000000000001", b"different" * 1000)
    reader = Repository.open(storage, recovery_key=recovery)
    assert reader.read_ref(reader.get_ref("wal/db", "000000010000000000000001")) == b"segment" * 1000


def test_prune_keeps_the_data_of_a_genuine_snapshot_refused_for_a_clock_running_ahead(
    repo_keys, tmp_path, monkeypatch
):
    """A host whose clock runs an hour ahead writes a snapshot every reader refuses (future
    dated). Prune must not delete its data: once real time catches up it is valid."""
    storage, repo, _, recovery = repo_keys
    src = tmp_path / "src"
    src.mkdir()
    ahead = os.urandom(2 << 20)
    (src / "ahead").write_bytes(ahead)
    monkeypatch.setenv("LIFEBOAT_CLOCK_OFFSET", "3600")
    backup_paths(repo, "files", [src])
    monkeypatch.delenv("LIFEBOAT_CLOCK_OFFSET")
    reader = Repository.open(storage, recovery_key=recovery)
    listing = reader.snapshot_listing(use_cache=False)
    assert listing.accepted == [] and [r.reason[:19] for r in listing.refused] == ["dated in the future"]

    pruned = reader.prune()

    assert pruned.bytes_removed == 0
    monkeypatch.setenv("LIFEBOAT_CLOCK_OFFSET", "3700")  # real time has caught up
    later = Repository.open(storage, recovery_key=recovery)
    out = tmp_path / "out"
    restore_snapshot(later, later.find_snapshot("files"), out)
    assert (out / "src" / "ahead").read_bytes() == ahead


def test_forget_and_prune_keep_what_remaining_snapshots_need(repo_keys, tmp_path):
    storage, repo, _, recovery = repo_keys
    src = tmp_path / "src"
    src.mkdir()
    shared = os.urandom(2 << 20)
    (src / "shared").write_bytes(shared)
    (src / "v").write_bytes(os.urandom(2 << 20))
    backup_paths(repo, "files", [src])
    (src / "v").write_bytes(os.urandom(2 << 20))
    backup_paths(repo, "files", [src])
    reader = Repository.open(storage, recovery_key=recovery)
    report = reader.forget(KeepRules(last=1))
    assert len(report.removed) == 1 and len(report.kept) == 1
    pruned = reader.prune()
    assert pruned.bytes_removed > 0
    out = tmp_path / "out"
    fresh = Repository.open(storage, recovery_key=recovery)
    restore_snapshot(fresh, fresh.find_snapshot("files"), out)
    assert (out / "src" / "shared").read_bytes() == shared
    assert fresh.check(read_data=True).ok


def _snap(ts: datetime, n: int) -> SnapshotInfo:
    return SnapshotInfo(f"{n:064x}", "a", "files", ts, "h", {}, SnapshotStats(), [], "k")


def test_retention_selection_daily_weekly_and_min_age():
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)
    snaps = [_snap(now - timedelta(hours=6 * i), i) for i in range(200)]
    keep = select_keep(snaps, KeepRules(daily=7, weekly=4, min_days=2), now)
    kept_times = sorted(s.time for s in snaps if s.id in keep)
    days = {t.date() for t in kept_times}
    assert len(days) >= 7
    assert all(s.id in keep for s in snaps if now - s.time < timedelta(days=2))
    assert len(keep) < len(snaps)
    assert select_keep(snaps, KeepRules(), now).keys() == {s.id for s in snaps}


def test_object_lock_keeps_what_retention_would_delete(tmp_path, s3_server, make_bucket):
    from lifeboat.storage import open_storage

    # moto lets a client shorten COMPLIANCE retention: accepted only as a trusted endpoint
    storage = open_storage(
        f"s3://{make_bucket()}/repo", endpoint_url=s3_server, lock_days=1, trust_endpoint=True
    )
    repo, _, recovery = Repository.create(storage, lock_days=1)
    src = tmp_path / "src"
    src.mkdir()
    for _ in range(3):
        (src / "f").write_bytes(os.urandom(300_000))
        backup_paths(repo, "files", [src])
    reader = Repository.open(storage, recovery_key=recovery)
    report = reader.forget(KeepRules(last=1))
    assert len(report.locked) == 2 and not report.removed  # S3 answered AccessDenied; reported, kept
    assert len(reader.snapshots()) == 3
    pruned = reader.prune()
    assert pruned.packs_removed == 0
    assert reader.check(read_data=True).ok
    # lock files are written without retention, so they never accumulate
    assert list(storage.list("locks/")) == []


def test_large_file_round_trip(repo_keys, tmp_path):
    storage, repo, _, recovery = repo_keys
    src = tmp_path / "src"
    src.mkdir()
    big = src / "200MB.bin"
    rng = random.Random(200)
    with open(big, "wb") as fh:
        for _ in range(25):  # half incompressible, half text-like: realistic entropy
            fh.write(rng.randbytes(4 << 20))
            fh.write(
                b"".join(b"row %d %s\n" % (rng.randrange(10**9), CANARY[:8]) for _ in range(190_000))[
                    : 4 << 20
                ]
            )
    info = backup_paths(repo, "big", [src])
    assert info.stats.bytes == big.stat().st_size == 200 << 20
    reader = Repository.open(storage, recovery_key=recovery)
    out = tmp_path / "out"
    restore_snapshot(reader, reader.find_snapshot("big"), out)
    import hashlib

    assert (
        hashlib.sha256((out / "src" / "200MB.bin").read_bytes()).digest()
        == hashlib.sha256(big.read_bytes()).digest()
    )
