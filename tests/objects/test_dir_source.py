"""A `dir://` objects source is backed up as it is walked, into a streamed tree (issue #18):
keys whose order differs between a flat sort and a walk (`photo.jpg` and `photo/x.jpg`,
`%`-escaped segments) still find their parent's entry, so an unchanged backup reads nothing
and a changed file is read again; the restore gives back every byte."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifeboat.assets.objects.info import ObjectDir
from lifeboat.assets.objects.keypaths import relpath_to_key
from lifeboat.assets.objects.source import DirFile, DirSource
from lifeboat.crypto.keys import load_recovery_key
from lifeboat.repo import Entry, Repository, SnapshotInfo
from lifeboat.repo.parents import walk_key
from lifeboat.storage import open_storage
from tests.harness import LifeboatCli, PolicyBuilder
from tests.objects.dir_media import DirMedia, dir_media, files_under

# relative paths in the source directory: names that sort differently flat and per
# level ('.', '-' and ' ' come before '/'), upper case, tokens ('%2E%2E' is the key segment
# '..', '%25%2E' the key segment '%2E'), a '%' of a file's own name (which once had no key
# that named it again, and failed the backup), an empty file, a deep one
NAMES = [
    "photo.jpg",
    "photo/x.jpg",
    "photo-1/y.jpg",
    "photo 2/z.jpg",
    "Zeta/a.bin",
    "a/b/c/d/e/f/deep.bin",
    "%25/percent.bin",
    "%/raw-percent.bin",
    "sale/50%off.jpg",
    "%25%2E/escaped-token.bin",
    "%2E%2E/dots.bin",
    "-a/minus.bin",  # before ".." as a key, after "%2E%2E" as a name
    "empty.bin",
]


def test_a_directory_source_backs_up_in_walk_order_reuses_unchanged_files_and_restores_exactly(
    tmp_path: Path,
) -> None:
    source = tmp_path / "media"
    for i, name in enumerate(NAMES):
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"" if name == "empty.bin" else os.urandom(100 + 37 * i))
    media = dir_media(tmp_path, source)
    lb, recovery = media.lb, media.recovery

    first = lb.json("backup", "media")[0]
    unchanged = lb.json("backup", "media")[0]
    (source / "photo" / "x.jpg").write_bytes(os.urandom(999))  # changed
    (source / "photo" / "new.jpg").write_bytes(os.urandom(55))  # added
    (source / "Zeta" / "a.bin").unlink()  # removed
    changed = lb.json("backup", "media")[0]

    labels = {s["id"]: s["labels"] for s in lb.json("snapshots", "--asset", "media")}
    assert labels[first["snapshot"]]["downloaded"] == str(len(NAMES))
    assert labels[unchanged["snapshot"]]["downloaded"] == "0"
    assert labels[unchanged["snapshot"]]["reused"] == str(len(NAMES))
    assert labels[changed["snapshot"]]["downloaded"] == "2"
    assert labels[changed["snapshot"]]["reused"] == str(len(NAMES) - 2)

    target = tmp_path / "restored"
    restore = ("restore", "media", "--snapshot", changed["snapshot"], "--target", f"dir://{target}")
    lb.run(*restore, "--recovery-key", recovery)
    assert files_under(target) == files_under(source)


def test_the_walk_gives_keys_in_the_order_of_a_streamed_tree(tmp_path: Path) -> None:
    """Each directory before its content, key segments (not file names) sorted at every
    level: the order the parent's entries are read in (repo/parents.py)."""
    for name in NAMES:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    walked = list(DirSource(f"dir://{tmp_path}").walk_current())
    keys = [item.key for item in walked]
    assert keys == sorted(keys, key=walk_key)
    assert {i.key for i in walked if isinstance(i, DirFile)} == {relpath_to_key(n) for n in NAMES}
    assert keys.index("-a") < keys.index("..") < keys.index("../dots.bin") < keys.index("photo")


def test_a_walked_file_is_the_object_a_listing_describes(tmp_path: Path) -> None:
    """The walk yields light records (``DirFile``): each names its file, and its identity is
    the identity of the object ``list_current`` describes, in the form every version before
    the records wrote into parent caches (pinned here from the file's own stat), so a cache
    written by either is found by the other."""
    contents = {}
    for i, name in enumerate(NAMES):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        contents[relpath_to_key(name)] = os.urandom(7 * i)
        path.write_bytes(contents[relpath_to_key(name)])
    source = DirSource(f"dir://{tmp_path}")
    files = [item for item in source.walk_current() if isinstance(item, DirFile)]
    listed = {obj.key: obj for obj in source.list_current()}
    assert {f.key for f in files} == set(contents) == set(listed)
    for f in files:
        obj = listed[f.key]
        assert Path(f.path).read_bytes() == contents[f.key] and f.size == obj.size == len(contents[f.key])
        st = os.stat(f.path)
        etag = f"{st.st_mtime_ns:x}-{st.st_ino:x}-{st.st_ctime_ns:x}"
        assert f.identity == obj.identity == f"{f.key}||{etag}|{st.st_size}"
        assert source.path_of(obj) == f.path


def test_an_unreadable_directory_of_the_source_stops_the_backup_with_its_path_named() -> None:
    """One line naming the directory, not an internal error; what was walked before it is
    not committed; a restore into a directory this user may not look into is refused the
    same way. As root, the directory is root's and lifeboat runs as `nobody`."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="lifeboat-unreadable-"))
    os.chmod(base, 0o755)  # nobody must reach what it is allowed to read
    user = "nobody" if os.geteuid() == 0 else None
    locked = base / "media" / "locked"
    try:
        (base / "media" / "ok").mkdir(parents=True)
        (base / "media" / "ok" / "a.bin").write_bytes(b"a")
        locked.mkdir()
        (locked / "b.bin").write_bytes(b"b")
        work = base / "work"
        work.mkdir()
        policy = (
            PolicyBuilder()
            .repository(f"file://{work / 'repo'}")
            .state(work / "state")
            .data_class("standard", rpo="1d", rto="1h")
            .objects("media", f"dir://{base / 'media'}")
            .write(work / "lifeboat.toml")
        )
        if user:
            for path in (work, policy):
                shutil.chown(path, user)
        os.chmod(locked, 0o700 if user else 0o000)
        lb = LifeboatCli(policy, user=user, cwd=work)
        lb.run("init", "--recovery-key-out", str(work / "recovery.key"))

        proc = lb.run("backup", "media", check=False)

        assert proc.returncode not in (0, 70), proc.stderr
        assert f"cannot read {locked} in the source directory: Permission denied" in proc.stderr
        assert "internal error" not in proc.stderr
        assert lb.json("snapshots") == []

        os.chmod(locked, 0o700)
        shutil.rmtree(locked)
        lb.run("backup", "media")
        locked.mkdir()
        os.chmod(locked, 0o700 if user else 0o000)
        target = f"dir://{locked / 'restored'}"
        key = str(work / "recovery.key")
        restore = lb.run("restore", "media", "--target", target, "--recovery-key", key, check=False)
        assert restore.returncode not in (0, 70), restore.stderr
        assert f"lifeboat: error: cannot read target {target}: Permission denied" in restore.stderr
    finally:
        os.chmod(locked, 0o700)
        shutil.rmtree(base)


def _backup_with_walk_hook(
    tmp_path: Path, source: Path, after_walked: Callable[[str], None]
) -> tuple[DirMedia, SnapshotInfo]:
    """A dir:// backup whose walk calls ``after_walked(key)`` after yielding each file, before
    a reader opens it (its read comes files later); the DirMedia to run the CLI against the
    same repository, and the snapshot. The backup leaves no file open."""
    from lifeboat import runtime
    from lifeboat.assets.objects.backup import backup_directory
    from lifeboat.assets.objects.model import ObjectsAsset
    from lifeboat.assets.registry import load_policy
    from lifeboat.progress import NO_PROGRESS

    media = dir_media(tmp_path, source)
    policy = load_policy(media.policy)
    walked = DirSource(f"dir://{source}")
    walk = walked.walk_current

    def hooked() -> Iterator[DirFile | ObjectDir]:
        for item in walk():
            yield item
            if isinstance(item, DirFile):
                after_walked(item.key)

    walked.walk_current = hooked  # type: ignore[method-assign]
    asset = ObjectsAsset.of(policy.asset("media"))
    repo = runtime.open_for_write(policy)
    descriptors = len(os.listdir("/proc/self/fd"))
    info = backup_directory(asset, walked, repo, NO_PROGRESS)
    assert len(os.listdir("/proc/self/fd")) == descriptors  # every file opened ahead was closed
    return media, info


def test_a_file_deleted_between_the_walk_and_its_read_is_left_out(tmp_path: Path) -> None:
    """A live media tree changes while it is backed up: a file the walk saw and that is
    gone by its read is left out (counted as `vanished`), as a listing taken a moment later
    would leave it out, and the backup of the rest commits. The deletion is made to land
    in that window: right after the walk yields the file (its read comes files later)."""
    source = tmp_path / "media"
    source.mkdir()
    for name in ("a.bin", "gone.bin", "z.bin"):
        (source / name).write_bytes(os.urandom(300))

    def delete(key: str) -> None:
        if key == "gone.bin":
            (source / "gone.bin").unlink()

    media, info = _backup_with_walk_hook(tmp_path, source, delete)

    assert info.labels["vanished"] == "1" and info.labels["downloaded"] == "2"
    target = tmp_path / "restored"
    media.lb.run("restore", "media", "--target", f"dir://{target}", "--recovery-key", media.recovery)
    assert files_under(target) == files_under(source)  # a.bin and z.bin


def test_a_pipe_put_in_place_of_a_file_after_the_walk_is_left_out_not_waited_on(tmp_path: Path) -> None:
    """A large file (read the usual way, not opened ahead) and a small one turned into pipes
    after the walk: before, the large one's open waited for a writer for ever, and the
    small one was stored as an empty object. Both are left out now, as a deleted file is.
    The large one stays under a batch's worth of bytes (1 MiB): a batch that reaches it
    goes to a reader at once, which could read the file before the hook swaps it."""
    source = tmp_path / "media"
    source.mkdir()
    (source / "a.bin").write_bytes(os.urandom(300))
    (source / "big.bin").write_bytes(os.urandom(600 << 10))
    (source / "small.bin").write_bytes(os.urandom(300))

    def pipe(key: str) -> None:
        if key in ("big.bin", "small.bin"):
            (source / key).unlink()
            os.mkfifo(source / key)

    _, info = _backup_with_walk_hook(tmp_path, source, pipe)
    assert info.labels["vanished"] == "2" and info.labels["downloaded"] == "1"


def test_a_file_that_grows_between_the_walk_and_its_read_is_stored_as_read(tmp_path: Path) -> None:
    """A log appended to while the backup runs: stored as it was when read (its size and
    identity taken when it was opened), not refused for differing from the walk's size
    (before: `short read` on every attempt, and the whole backup failed)."""
    source = tmp_path / "media"
    source.mkdir()
    (source / "app.log").write_bytes(b"line 1\n")

    def append(_: str) -> None:
        with open(source / "app.log", "ab") as log:
            log.write(b"line 2, written after the walk saw the file\n")

    media, info = _backup_with_walk_hook(tmp_path, source, append)

    assert info.labels["downloaded"] == "1"
    target = tmp_path / "restored"
    media.lb.run("restore", "media", "--target", f"dir://{target}", "--recovery-key", media.recovery)
    assert (target / "app.log").read_bytes() == (source / "app.log").read_bytes()
    unchanged = media.lb.json("backup", "media")[0]  # the identity stored is the one read
    assert media.lb.json("snapshots")[-1]["labels"]["reused"] == "1", unchanged


def test_a_file_rewritten_at_its_size_between_the_walk_and_its_read_is_stored_as_read(tmp_path: Path) -> None:
    """Stored as read and described as opened: the next backup takes it unchanged."""
    source = tmp_path / "media"
    source.mkdir()
    (source / "cfg.bin").write_bytes(b"A" * 100)

    def rewrite(_: str) -> None:
        (source / "cfg.bin").write_bytes(b"B" * 100)
        st = os.stat(source / "cfg.bin")
        os.utime(source / "cfg.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))

    media, _ = _backup_with_walk_hook(tmp_path, source, rewrite)
    first = tmp_path / "first"
    media.lb.run("restore", "media", "--target", f"dir://{first}", "--recovery-key", media.recovery)
    assert (first / "cfg.bin").read_bytes() == b"B" * 100  # as read, not as walked
    assert media.lb.json("backup", "media")[0]["stats"]["reused_files"] == 1  # its identity is the one read


def test_a_file_swapped_by_rename_after_the_walk_and_swapped_back_is_never_taken_stale(
    tmp_path: Path,
) -> None:
    """Blue/green: the walk sees A, a reader opens B renamed over it, A is renamed back
    later (its inode, mtime and size again). Had B's bytes been stored under A's identity
    as walked, the next backup would take them for A. Fails when a reader describes a
    file as walked (7460050), found by review."""
    source = tmp_path / "media"
    source.mkdir()
    live, spare, hold = source / "cfg.bin", tmp_path / "spare.bin", tmp_path / "hold.bin"
    live.write_bytes(b"A" * 100)
    spare.write_bytes(b"B" * 100)

    def swap(key: str) -> None:
        if key == "cfg.bin":
            os.rename(live, hold)
            os.rename(spare, live)

    media, _ = _backup_with_walk_hook(tmp_path, source, swap)
    os.rename(live, spare)  # A is live again
    os.rename(hold, live)
    media.lb.json("backup", "media")
    out = tmp_path / "out"
    media.lb.run("restore", "media", "--target", f"dir://{out}", "--recovery-key", media.recovery)

    assert (out / "cfg.bin").read_bytes() == b"A" * 100


def test_a_file_rewritten_in_place_with_its_old_mtime_put_back_is_read_again(tmp_path: Path) -> None:
    """VeraCrypt (its default), exiftool -P and mp3gain -p rewrite a file in place and put
    its modification time back: same inode, size and mtime. Its ctime moved, so the next
    backup reads it (taken from the parent by an identity of mtime and inode, every later
    snapshot held the old bytes; found by review). An in-place restore does not take it
    for the file it was either."""
    source = tmp_path / "media"
    source.mkdir()
    vault = source / "vault.hc"
    vault.write_bytes(b"A" * 4096)
    media = dir_media(tmp_path, source)
    media.lb.json("backup", "media")
    before = vault.stat()
    with open(vault, "r+b") as fh:
        fh.write(b"B" * 4096)
    os.utime(vault, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = vault.stat()
    same = ("st_ino", "st_size", "st_mtime_ns")
    assert [getattr(after, f) for f in same] == [getattr(before, f) for f in same]

    second = media.lb.json("backup", "media")[0]
    assert second["stats"]["reused_files"] == 0
    out = tmp_path / "out"
    media.lb.run("restore", "media", "--target", f"dir://{out}", "--recovery-key", media.recovery)
    assert (out / "vault.hc").read_bytes() == b"B" * 4096


def file_entries(tmp_path: Path, media: DirMedia, snapshot_id: str) -> list[Entry]:
    """The file entries of a snapshot of ``dir_media(tmp_path, ...)``, read with its recovery key."""
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo = Repository.open(storage, recovery_key=load_recovery_key(Path(media.recovery)))
    [snapshot] = [s for s in repo.snapshots() if s.id == snapshot_id]
    return [e for e in repo.reader(snapshot).iter_entries() if e.type == "file"]


def test_a_file_is_recorded_with_its_etag_and_time_only(tmp_path: Path) -> None:
    """A directory has no versions, content types, user metadata or tags: an entry of a
    `dir://` snapshot records the file's etag (mtime and inode) and time, and a drill's
    comparison with the source (by etag) and a restore still find what they need."""
    source = tmp_path / "media"
    source.mkdir()
    (source / "a.bin").write_bytes(os.urandom(300))
    media = dir_media(tmp_path, source)
    [result] = media.lb.json("backup", "media")
    [entry] = file_entries(tmp_path, media, result["snapshot"])
    st = os.stat(source / "a.bin")
    assert entry.meta == {
        "etag": f"{st.st_mtime_ns:x}-{st.st_ino:x}-{st.st_ctime_ns:x}",
        "last_modified": datetime.fromtimestamp(st.st_mtime, UTC).isoformat(),
    }
    target = tmp_path / "restored"
    media.lb.run("restore", "media", "--target", f"dir://{target}", "--recovery-key", media.recovery)
    assert files_under(target) == files_under(source)


def test_entries_of_both_forms_in_one_snapshot_compare_and_restore_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgrade carries an unchanged file's entry on as stored (the full form, with key,
    version, content type, metadata and tags) beside new entries of the short form: both
    compare with the directory by etag (an in-place dry run finds nothing to do) and both
    restore."""
    from lifeboat.assets.objects import backup as objects_backup

    source = tmp_path / "media"
    source.mkdir()
    for name in ("a.bin", "b.bin"):
        (source / name).write_bytes(os.urandom(300))
    with monkeypatch.context() as patched:
        patched.setattr(objects_backup, "file_meta", objects_backup.object_meta)  # what versions before wrote
        media, _ = _backup_with_walk_hook(tmp_path, source, lambda key: None)
    (source / "b.bin").write_bytes(os.urandom(200))
    [mixed] = media.lb.json("backup", "media")
    metas = {e.path: e.meta for e in file_entries(tmp_path, media, mixed["snapshot"])}
    assert metas["a.bin"]["key"] == "a.bin" and set(metas["b.bin"]) == {"etag", "last_modified"}
    restore = ("restore", "media", "--recovery-key", media.recovery, "--snapshot", mixed["snapshot"])
    dry = media.lb.json(*restore, "--in-place", "--dry-run")
    assert sorted(dry["plan"]["unchanged"]) == ["a.bin", "b.bin"] and dry["plan"]["restore"] == []
    target = tmp_path / "restored"
    media.lb.run(*restore, "--target", f"dir://{target}")
    assert files_under(target) == files_under(source)
