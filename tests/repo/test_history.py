"""Cost with history: index files consolidate on their own, prune repacks small and mostly
unused packs, and neither ever loses what a snapshot needs."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from lifeboat.crypto.signed import SIGNATURE_SIZE
from lifeboat.repo import Repository
from lifeboat.repo import consolidate as consolidate_module
from lifeboat.repo import index as index_module
from lifeboat.repo import snapshot_cache as snapshot_cache_module
from lifeboat.repo.index import index_parts
from lifeboat.repo.local_cache import TAG_SIZE
from lifeboat.repo.model import SnapshotInfo
from lifeboat.storage import open_storage
from lifeboat.storage.base import Storage
from tests.harness.counting import CountingIndexReads

LIMIT = 8


def index_names(storage: Storage) -> list[str]:
    return sorted(o.name for o in storage.list("index/"))


def pack_names(storage: Storage) -> list[str]:
    return sorted(o.name for o in storage.list("data/"))


def content(n: int, size: int = 3000) -> bytes:
    """Distinct, incompressible bytes per backup (so every backup writes new packs)."""
    return random.Random(n).randbytes(size)


def backup(repo: Repository, n: int, asset: str = "app") -> SnapshotInfo:
    with repo.backup(asset, "files") as session:
        session.add_bytes(f"file-{n}.bin", content(n))
        session.add_bytes("shared.txt", b"the same in every snapshot\n" * 50)
        return session.commit()


def assert_restores(repo: Repository, snaps: dict[int, SnapshotInfo], out: Path) -> None:
    for n, info in snaps.items():
        target = out / f"r{n}"
        repo.reader(info).restore_tree(target)
        assert (target / f"file-{n}.bin").read_bytes() == content(n)
        assert (target / "shared.txt").read_bytes() == b"the same in every snapshot\n" * 50


def damage_file(path: Path) -> None:
    """One byte of a stored (read-only) file flipped, as the disk or the provider might."""
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def assert_check_clean(repo: Repository) -> None:
    report = repo.check(read_data=True)
    assert report.ok, [(p.kind, p.message) for p in report.problems]
    assert report.packs_read == report.packs > 0


@pytest.fixture(params=["file", "s3"])
def storage(request, tmp_path):
    if request.param == "file":
        st = open_storage(f"file://{tmp_path / 'repo'}")
    else:  # SeaweedFS: a real S3 server, at a third of moto's CPU per request
        endpoint = request.getfixturevalue("seaweed").endpoint
        bucket = request.getfixturevalue("make_seaweed_bucket")(object_lock=False)
        st = open_storage(f"s3://{bucket}/repo", endpoint_url=endpoint)
    yield st
    st.close()


def test_index_files_stay_bounded_over_many_backups_and_every_snapshot_restores(
    storage, tmp_path, monkeypatch
):
    monkeypatch.setenv("LIFEBOAT_INDEX_FILES_MAX", str(LIMIT))
    repo, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    snaps = {}
    most = 0
    for n in range(30):  # each backup writes two index files: 60 without consolidation
        snaps[n] = backup(repo, n)
        most = max(most, len(index_names(storage)))
    assert most <= LIMIT
    reader = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "reader-cache")
    assert len(reader.snapshots()) == 30
    assert_restores(reader, snaps, tmp_path / "out")
    assert_check_clean(reader)


def test_index_files_are_cut_at_their_size_and_full_ones_are_never_merged_again(tmp_path, monkeypatch):
    """Index files list at most INDEX_FILE_BLOBS blobs (a reader decodes one whole), and a
    consolidation leaves files that are full as they are: a long history is not rewritten,
    nor read, by every backup past the threshold."""
    monkeypatch.setenv("LIFEBOAT_INDEX_FILES_MAX", "4")
    monkeypatch.setattr(index_module, "INDEX_FILE_BLOBS", 3)
    monkeypatch.setattr(consolidate_module, "FULL_INDEX_BLOBS", 2)
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    snaps, full_seen = {}, set()
    for n in range(16):  # two index files a backup (data, tree) of a blob or two each
        snaps[n] = backup(repo, n)
        listing = Repository.open(storage, recovery_key=recovery).index().file_blobs
        assert max(listing.values()) <= 3
        assert full_seen <= set(listing)  # a full file, once written, stays as it is
        full_seen |= {name for name, blobs in listing.items() if blobs >= 2}
        assert sum(1 for blobs in listing.values() if blobs < 2) <= 4 + 2
    assert len(full_seen) >= 5  # consolidations did write full files
    reader = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "reader-cache")
    assert_restores(reader, snaps, tmp_path / "out")
    assert_check_clean(reader)


def test_a_backup_that_writes_many_full_index_files_reads_none_back(tmp_path, monkeypatch):
    """A big first backup writes index file after index file, all full: past the threshold
    it must not read them back to find small ones (at a million files that was every blob
    decoded at once, 600 MB): it knows what it wrote."""
    monkeypatch.setenv("LIFEBOAT_INDEX_FILES_MAX", "4")
    monkeypatch.setattr(index_module, "INDEX_FILE_BLOBS", 3)
    monkeypatch.setattr(consolidate_module, "FULL_INDEX_BLOBS", 2)
    storage = CountingIndexReads(tmp_path / "repo")
    repo, _, recovery = Repository.create(storage, pack_size=8192, cache_dir=tmp_path / "cache")
    with repo.backup("app", "files") as session:
        for n in range(40):
            session.add_bytes(f"file-{n}.bin", content(n, size=3000))
        info = session.commit()
    listing = Repository.open(storage, recovery_key=recovery).index().file_blobs
    assert sum(1 for blobs in listing.values() if blobs >= 2) > 4  # past the threshold, all full
    assert storage.index_reads == len(listing)  # the reader's reads; none by the backup
    target = tmp_path / "out"
    Repository.open(storage, recovery_key=recovery).reader(info).restore_tree(target)
    assert all((target / f"file-{n}.bin").read_bytes() == content(n, size=3000) for n in range(40))


def test_index_parts_never_split_a_pack() -> None:
    sizes = [2, 2, 5, 1, 1, 1]
    packs = [{"id": str(i), "blobs": [[f"{i}-{b}"] for b in range(n)]} for i, n in enumerate(sizes)]
    parts = list(index_parts(packs, limit=3))  # type: ignore[arg-type]
    assert [[p["id"] for p in part] for part in parts] == [["0"], ["1"], ["2"], ["3", "4", "5"]]


def test_no_consolidation_below_the_threshold(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_INDEX_FILES_MAX", "100")
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, _, _ = Repository.create(storage, cache_dir=tmp_path / "cache")
    for n in range(5):
        backup(repo, n)
    assert len(index_names(storage)) == 10  # data and tree index of each backup, untouched


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from lifeboat.crypto.keys import load_backup_key
    from lifeboat.repo import Repository
    from lifeboat.storage.local import LocalStorage

    root, key, cache, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    deletes = 0

    class Dying(LocalStorage):
        def delete(self, name):
            global deletes
            if name.startswith("index/"):
                if deletes == kill_at:
                    # the consolidated index is written: die as a power cut would
                    os.kill(os.getpid(), signal.SIGKILL)
                deletes += 1
            super().delete(name)

    repo = Repository.open(Dying(Path(root)), backup_key=load_backup_key(Path(key)), cache_dir=Path(cache))
    with repo.backup("app", "files") as session:
        session.add_bytes("file-99.bin", bytes(range(256)) * 40)
        session.commit()
    print("survived")
    """
)


@pytest.mark.parametrize("kill_at", [0, 4])
def test_backup_killed_during_consolidation_leaves_a_sound_repository(tmp_path, monkeypatch, kill_at):
    monkeypatch.setenv("LIFEBOAT_INDEX_FILES_MAX", str(LIMIT))
    root = tmp_path / "repo"
    storage = open_storage(f"file://{root}")
    repo, backup_key, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    snaps = {n: backup(repo, n) for n in range(4)}  # 8 index files: at the threshold
    before = set(index_names(storage))
    assert len(before) == LIMIT
    backup_key.save(tmp_path / "backup.key")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            *map(str, (root, tmp_path / "backup.key", tmp_path / "cache", kill_at)),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "LIFEBOAT_INDEX_FILES_MAX": str(LIMIT)},
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    after = set(index_names(storage))
    # the killed backup's two index files and the consolidated one were written, and
    # kill_at of the superseded ones deleted before the kill
    assert after - before and len(after) == LIMIT + 3 - kill_at
    reader = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "reader-cache")
    assert len(reader.snapshots()) == 5  # the killed backup had committed its snapshot
    assert_check_clean(reader)
    assert_restores(reader, snaps, tmp_path / "out")
    # the next backup finishes the job
    snaps[5] = backup(repo, 5)
    assert len(index_names(storage)) <= 3
    reader = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "reader-cache2")
    assert_check_clean(reader)
    assert_restores(reader, snaps, tmp_path / "out2")


def test_prune_repacks_small_packs_and_every_snapshot_still_restores(storage, tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_INDEX_FILES_MAX", "0")  # keep this about packs
    repo, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    snaps = {n: backup(repo, n) for n in range(12)}
    small_before = pack_names(storage)
    assert len(small_before) >= 24  # a data pack and a tree pack per backup at least, all small
    owner = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "prune-cache")
    report = owner.prune()
    assert report.packs_repacked == len(small_before) and report.bytes_repacked > 0
    after = pack_names(storage)
    assert len(after) == 1 and not set(after) & set(small_before)
    assert len(index_names(storage)) == 1
    reader = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "reader-cache")
    assert_restores(reader, snaps, tmp_path / "out")
    assert_check_clean(reader)
    again = owner.prune()  # nothing left to do: the new pack is the only small one
    assert again.packs_repacked == 0 and pack_names(storage) == after


def test_prune_killed_while_repacking_leaves_every_snapshot_and_the_next_prune_finishes(
    tmp_path, monkeypatch
):
    """Repack indexes its new packs as they are stored (an index file per INDEX_FILE_BLOBS
    of their blobs, not every entry held to the end): killed after some of them, nothing
    is deleted yet, every snapshot restores, and the next prune does the rest."""
    from lifeboat.repo import repack as repack_module

    monkeypatch.setenv("LIFEBOAT_INDEX_FILES_MAX", "0")
    monkeypatch.setattr(repack_module, "INDEX_FILE_BLOBS", 2)
    monkeypatch.setattr(repack_module, "SMALL_FRACTION", 10.0**9)  # every pack "small"
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    snaps = {n: backup(repo, n) for n in range(12)}
    packs_before, index_before = pack_names(storage), index_names(storage)
    owner = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "prune-cache")
    owner.pack_size = 1  # every blob copied fills a new pack: 8 packs read, 8 or more stored
    real, real_write = repack_module._live_payloads, repack_module.write_index
    calls = []
    indexed = threading.Semaphore(0)

    def write_index(*args, **kwargs):
        written = real_write(*args, **kwargs)
        indexed.release()
        return written

    def killed_at_the_ninth_pack(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 9:  # once the packs stored so far are indexed (on the upload threads)
            assert indexed.acquire(timeout=60) and indexed.acquire(timeout=60)
            raise KeyboardInterrupt  # what a kill leaves: no line of prune runs after this
        return real(*args, **kwargs)

    monkeypatch.setattr(repack_module, "write_index", write_index)

    monkeypatch.setattr(repack_module, "_live_payloads", killed_at_the_ninth_pack)
    with pytest.raises(KeyboardInterrupt):
        owner.prune(repack=repack_module.RepackOptions(repack_small=True))
    monkeypatch.setattr(repack_module, "_live_payloads", real)
    written = set(index_names(storage)) - set(index_before)
    assert len(written) >= 2  # the new packs indexed as they came, before the kill
    assert set(packs_before) < set(pack_names(storage))  # nothing deleted
    reader = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "reader-cache")
    assert_restores(reader, snaps, tmp_path / "out")

    report = owner.prune(repack=repack_module.RepackOptions(repack_small=True))
    assert report.packs_repacked > 0
    assert not set(pack_names(storage)) & set(packs_before)
    reader = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "reader-cache2")
    assert_restores(reader, snaps, tmp_path / "out2")
    assert_check_clean(reader)


def test_prune_keeps_a_pack_it_could_not_repack_listed_and_the_rest_restores(tmp_path, monkeypatch):
    """A damaged pack among those to repack is left as it is: prune, which lets go of the
    whole index while it repacks, lists that pack again in the new index (its old index
    file is gone), so check names the damage instead of blobs no index lists, and every
    snapshot that does not need it restores."""
    monkeypatch.setenv("LIFEBOAT_INDEX_FILES_MAX", "0")
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    snaps = {n: backup(repo, n) for n in range(5)}
    before_fifth = set(pack_names(storage))
    snaps[5] = backup(repo, 5)
    damaged = sorted(set(pack_names(storage)) - before_fifth)[0]  # one of the fifth backup's own
    snaps |= {n: backup(repo, n) for n in range(6, 12)}
    damage_file(tmp_path / "repo" / damaged)
    total = len(pack_names(storage))

    owner = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "prune-cache")
    report = owner.prune()
    assert report.packs_repacked == total - 1
    assert damaged in pack_names(storage) and len(pack_names(storage)) == 2  # it, and the new one

    reader = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "reader-cache")
    assert damaged.rsplit("/", 1)[-1] in reader.index().packs()
    problems = reader.check(read_data=True).problems
    assert problems and {p.object for p in problems} == {damaged}, [(p.object, p.message) for p in problems]
    assert {f for p in problems for f in p.files} <= {"file-5.bin"}
    assert_restores(reader, {n: s for n, s in snaps.items() if n != 5}, tmp_path / "out")


def test_prune_leaves_a_few_small_packs_unless_asked(tmp_path):
    from lifeboat.repo.repack import RepackOptions

    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    snaps = {n: backup(repo, n) for n in range(3)}
    owner = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "prune-cache")
    before = len(pack_names(storage))
    assert owner.prune().packs_repacked == 0 and len(pack_names(storage)) == before >= 6
    report = owner.prune(repack=RepackOptions(repack_small=True))
    assert report.packs_repacked == before and len(pack_names(storage)) == 1
    assert_restores(owner, snaps, tmp_path / "out")
    assert_check_clean(owner)


def test_prune_repacks_a_mostly_unused_pack(tmp_path):
    from lifeboat.repo.repack import RepackOptions

    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    snaps = {n: backup(repo, n, asset=f"app{n}") for n in range(8)}
    owner = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "prune-cache")
    owner.prune(repack=RepackOptions(repack_small=True))
    (pack,) = pack_names(storage)  # every snapshot's blobs in one pack
    old_size = storage.stat(pack).size
    for n in range(7):  # what forget does: now most of the pack is garbage
        storage.delete(f"snapshots/{snaps.pop(n).id}")
    unlimited = owner.prune(repack=RepackOptions(max_unused=None), dry_run=True)
    assert unlimited.packs_repacked == 0 and unlimited.packs_removed == 0
    report = owner.prune()  # at most 5% unused by default
    assert report.packs_repacked == 1
    (new_pack,) = pack_names(storage)
    assert new_pack != pack
    assert storage.stat(new_pack).size < old_size / 4  # only the last snapshot's blobs
    assert_restores(owner, snaps, tmp_path / "out")
    assert_check_clean(owner)


def test_prune_under_object_lock_repacks_only_what_retention_lets_it_delete(s3_server, make_bucket, tmp_path):
    bucket = make_bucket()
    plain = open_storage(f"s3://{bucket}/repo", endpoint_url=s3_server, trust_endpoint=True)
    repo, key, recovery = Repository.create(plain, cache_dir=tmp_path / "cache")
    snaps = {n: backup(repo, n) for n in range(6)}  # written before the lock: no retention
    unlocked = set(pack_names(plain))
    locked_storage = open_storage(
        f"s3://{bucket}/repo", endpoint_url=s3_server, lock_days=1, trust_endpoint=True
    )
    # the same writer (its chunk-id key: dedup stays within one writer's data), recovery side too
    repo = Repository.open(locked_storage, backup_key=key, recovery_key=recovery, cache_dir=tmp_path / "c2")
    snaps.update({n: backup(repo, n) for n in range(6, 12)})
    locked = set(pack_names(locked_storage)) - unlocked
    # the later snapshots reuse the first one's shared.txt chunk: its pack got locked too
    retained = {p for p in pack_names(locked_storage) if locked_storage.retention(p, fresh=True)}
    assert locked < retained and len(retained - locked) == 1
    every = set(pack_names(locked_storage))
    report = repo.prune()
    kept = set(report.repack_kept_locked)
    # retained packs and those an index file under retention lists (it cannot be deleted,
    # so neither can they) are reported and left; every other one was repacked
    assert retained <= kept < every
    assert report.packs_repacked == len(every - kept) > 0
    assert set(pack_names(locked_storage)) - kept and kept <= set(pack_names(locked_storage))
    assert not (every - kept) & set(pack_names(locked_storage))
    reader = Repository.open(locked_storage, recovery_key=recovery, cache_dir=tmp_path / "reader-cache")
    assert_restores(reader, snaps, tmp_path / "out")
    assert_check_clean(reader)


def cached(path):
    """A cache file's JSON (its last TAG_SIZE bytes are the tag, repo/local_cache.py)."""
    return json.loads(path.read_bytes()[:-TAG_SIZE])


def test_snapshot_headers_come_from_the_local_cache_but_the_listing_decides(tmp_path):
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    snaps = [backup(repo, n) for n in range(4)]
    assert [s.id for s in repo.snapshots()] == [s.id for s in snaps]
    cache_file = tmp_path / "cache" / repo.id / "snapshots.json"
    assert set(cached(cache_file)) == {s.id for s in snaps}
    storage.delete(f"snapshots/{snaps[1].id}")  # forgotten: the cache must not bring it back
    again = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "cache")
    assert [s.id for s in again.snapshots()] == [snaps[0].id, snaps[2].id, snaps[3].id]
    assert set(cached(cache_file)) == {snaps[0].id, snaps[2].id, snaps[3].id}
    cache_file.write_text("{not json")  # a damaged cache is ignored and rebuilt
    assert [s.id for s in again.snapshots()] == [snaps[0].id, snaps[2].id, snaps[3].id]
    # choosing one snapshot (a backup's parent, a restore) reads only what the cache lacks
    newest = backup(again, 4)
    assert again.latest_snapshot_id("app") == newest.id
    assert again.find_snapshot("app").id == newest.id
    assert again.find_snapshot(snapshot_id=snaps[2].id[:10]).tree == snaps[2].tree
    assert again.find_snapshot("app", at=snaps[2].time).id == snaps[2].id
    summary = cached(cache_file.parent / "snapshots-summary.json")
    assert set(summary) >= {newest.id, snaps[3].id}
    storage.delete(f"snapshots/{newest.id}")
    assert again.latest_snapshot_id("app") == snaps[3].id
    assert again.latest_snapshot_id("other") is None
    # a header damaged in the storage is still found by check, whatever the cache holds
    # (a first check has verified every header: the next one reuses what is byte-identical)
    assert again.check().problems == []
    header = tmp_path / "repo" / "snapshots" / snaps[3].id
    os.chmod(header, 0o644)
    raw = bytearray(header.read_bytes())
    raw[-SIGNATURE_SIZE - 1] ^= 1  # the header's last byte, before the writer's signature
    header.write_bytes(bytes(raw))
    report = again.check()
    assert [p.kind for p in report.problems] == ["corrupt-snapshot"]
    # the signature itself damaged: the header is intact but no writer vouches for it
    raw[-SIGNATURE_SIZE - 1] ^= 1
    raw[-1] ^= 1
    header.write_bytes(bytes(raw))
    report = again.check()
    assert [(p.kind, "signature does not match" in p.message) for p in report.problems] == [
        ("refused-snapshot", True)
    ]
    assert snaps[3].id not in {s.id for s in again.snapshots()}


def test_consolidation_under_object_lock_merges_only_expired_index_files(
    s3_server, make_bucket, tmp_path, monkeypatch
):
    bucket = make_bucket()
    monkeypatch.setenv("LIFEBOAT_INDEX_FILES_MAX", "100")
    plain = open_storage(f"s3://{bucket}/repo", endpoint_url=s3_server, trust_endpoint=True)
    repo, _, recovery = Repository.create(plain, cache_dir=tmp_path / "cache")
    snaps = {n: backup(repo, n) for n in range(5)}  # written without retention
    unlocked = set(index_names(plain))
    monkeypatch.setenv("LIFEBOAT_INDEX_FILES_MAX", str(LIMIT))
    locked_storage = open_storage(
        f"s3://{bucket}/repo", endpoint_url=s3_server, lock_days=1, trust_endpoint=True
    )
    repo = Repository.open(locked_storage, recovery_key=recovery, cache_dir=tmp_path / "c2")
    snaps[5] = backup(repo, 5)
    after = set(index_names(locked_storage))
    retained = {n for n in after if locked_storage.retention(n, fresh=True)}
    # this backup's own index files, the consolidated one and the old ones it had to extend
    # (they list the pack of the chunk every snapshot shares) are under retention and stay
    assert retained == after and len(after) < len(unlocked) + 2
    assert unlocked - after  # the expired ones were merged and deleted
    snaps[6] = backup(repo, 6)  # nothing left to merge: every index file is under retention
    assert set(index_names(locked_storage)) >= after
    reader = Repository.open(locked_storage, recovery_key=recovery, cache_dir=tmp_path / "reader-cache")
    assert_restores(reader, snaps, tmp_path / "out")
    assert_check_clean(reader)


class CountingStorage:
    """A storage that counts the snapshot headers read from it."""

    def __init__(self, inner: Storage) -> None:
        self.inner, self.header_reads = inner, 0

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self.header_reads += name.startswith("snapshots/")
        return self.inner.get(name, offset, length)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_check_with_the_recovery_key_opens_what_only_the_writer_opened_before(tmp_path, monkeypatch):
    """The writer side and the recovery side share the host's header cache. A header whose
    recovery wrap is for a key the recovery side does not hold (a writer key file with a
    stale recovery key, a buggy or malicious writer) opens for its writer: the recovery
    side's check must still try it itself and report it, whatever the writer cached."""
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    writer, backup_key, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    backup(writer, 0)
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from lifeboat.repo import sealed

    stranger = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    real = sealed.seal_for

    def misaddressed(repo_id, writer_pub, key, recovery_pub, name, plaintext):  # type: ignore[no-untyped-def]
        return real(
            repo_id, writer_pub, key, stranger if name == "snapshots/" else recovery_pub, name, plaintext
        )

    monkeypatch.setattr(sealed, "seal_for", misaddressed)
    bad = backup(writer, 1)
    monkeypatch.undo()
    again = Repository.open(storage, backup_key=backup_key, cache_dir=tmp_path / "cache")
    assert bad.id in {s.id for s in again.snapshots()}  # the writer opens it (and caches it)
    assert again.check().problems == []  # so does the writer side's check
    reader = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "cache")
    problems = reader.check().problems
    assert [(p.kind, p.object) for p in problems] == [("corrupt-snapshot", f"snapshots/{bad.id}")]
    assert "does not open" in problems[0].message


def test_listing_a_copy_does_not_make_the_primary_read_its_headers_again(tmp_path):
    """A verbatim copy ([copies.NAME]) has the repository's id and so its header cache, with
    other file times: listing one must not make the next listing of the other read every
    header again."""
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, key, _ = Repository.create(storage, cache_dir=tmp_path / "cache")
    for n in range(10):
        backup(repo, n)
    shutil.copytree(tmp_path / "repo", tmp_path / "copy")
    for header in (tmp_path / "copy" / "snapshots").iterdir():
        os.utime(header, (1_000_000_000, 1_000_000_000))  # the copy's own file times
    primary = CountingStorage(open_storage(f"file://{tmp_path / 'repo'}"))
    copy = CountingStorage(open_storage(f"file://{tmp_path / 'copy'}"))

    def listed(storage: CountingStorage) -> int:
        handle = Repository.open(storage, backup_key=key, cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
        return len(handle.snapshots())

    assert listed(primary) == listed(copy) == 10
    primary.header_reads = copy.header_reads = 0
    for _ in range(2):
        assert listed(primary) == listed(copy) == 10
    assert primary.header_reads == 0


def test_a_long_history_saves_what_a_backup_added_beside_the_cache_not_the_whole_cache(tmp_path, monkeypatch):
    # the split as it would be at 512 headers, at 8: backups of 8 files are quick
    monkeypatch.setattr(snapshot_cache_module, "SPLIT_FROM", 8)
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    snaps = [backup(repo, n) for n in range(9)]
    assert [s.id for s in repo.snapshots()] == [s.id for s in snaps]
    folder = tmp_path / "cache" / repo.id
    base, summary = folder / "snapshots.json", folder / "snapshots-summary.json"
    written = (base.stat().st_ino, summary.stat().st_ino)
    assert set(cached(base)) == {s.id for s in snaps}

    newest = backup(repo, 9)
    assert [s.id for s in repo.snapshots()][-1] == newest.id
    # the ten headers are listed and chosen from; the files of the nine were not written again
    assert (base.stat().st_ino, summary.stat().st_ino) == written
    assert set(cached(folder / "snapshots-recent.json")) == {newest.id}
    assert newest.id in cached(folder / "snapshots-summary-recent.json")
    again = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "cache")
    assert again.find_snapshot("app").id == newest.id
    assert again.check().problems == []

    # (the recovery side's check verified every header for itself: all of them saved anew)
    written = (base.stat().st_ino, summary.stat().st_ino)
    # one forgotten (less than an eighth): listed without it, and listing again writes nothing
    storage.delete(f"snapshots/{snaps[4].id}")
    kept = [s.id for s in [*snaps[:4], *snaps[5:], newest]]
    assert [s.id for s in again.snapshots()] == kept
    recent = (folder / "snapshots-recent.json").stat().st_ino
    assert [s.id for s in again.snapshots()] == kept
    assert (folder / "snapshots-recent.json").stat().st_ino == recent
    assert (base.stat().st_ino, summary.stat().st_ino) == written

    # a recent file that fails its tag is ignored: the listing reads what it lacks
    (folder / "snapshots-recent.json").write_bytes(b"{}" + bytes(TAG_SIZE))
    (folder / "snapshots-summary-recent.json").write_bytes(b"{}" + bytes(TAG_SIZE))
    assert [s.id for s in again.snapshots()] == kept
    assert again.find_snapshot("app").id == newest.id

    # more than an eighth forgotten: the base is written whole again, the recent file emptied
    for snap in snaps[:3]:
        storage.delete(f"snapshots/{snap.id}")
    assert [s.id for s in again.snapshots()] == kept[3:]
    assert set(cached(base)) == set(kept[3:])
    assert cached(folder / "snapshots-recent.json") == {}
