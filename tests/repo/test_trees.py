"""Per-directory trees (format 2): written as the walk leaves each directory, read one
directory at a time; snapshots in the older single-document format still list, restore,
check and act as parents (docs/design/repository-format.md, "Trees")."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from lifeboat.assets.files.tree import backup_paths, identity_of, restore_snapshot, walk
from lifeboat.errors import IntegrityError
from lifeboat.repo import Repository
from lifeboat.repo.model import Entry, SnapshotInfo
from lifeboat.repo.retention import KeepRules
from lifeboat.repo.trees import (
    TREE_FORMAT_PER_DIRECTORY,
    TREE_FORMAT_SINGLE,
    decode_document,
    decode_file_entry,
)
from tests.harness.parent_caches import rewrite, verified_lines
from tests.harness.settle import settle
from tests.harness.trees import local_repository
from tests.harness.trees import regular_files as restored


def make_source(root: Path) -> dict[str, bytes]:
    files = {
        "top.txt": b"top level\n",
        "a/one.txt": b"one\n" * 100,
        "a/b/two.bin": os.urandom(3000),
        "a/b/c/three.txt": b"three\n",
        "a-sibling/four.txt": b"sorts between a and a/b as a string\n",
        "z/empty": b"",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "a" / "link").symlink_to("b/two.bin")
    (root / "empty-dir").mkdir()
    os.chmod(root / "a" / "b" / "two.bin", 0o600)
    return files


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return local_repository(tmp_path)


def old_format_backup(repo: Repository, root: Path) -> SnapshotInfo:
    """A files snapshot through the session's single-document path: what versions before
    per-directory trees wrote for the files kind, parent cache included."""
    with repo.backup("tree", "files") as session:
        for item in walk([root]):
            if item.st.st_mode & 0o170000 == 0o040000:
                session.add_entry(
                    Entry(item.name, "dir", mode=item.st.st_mode & 0o7777, mtime_ns=item.st.st_mtime_ns)
                )
            elif os.path.islink(item.path):
                continue
            else:
                session.add_file(item.name, Path(item.path), identity=identity_of(item))
        return session.commit()


def test_a_files_backup_writes_one_tree_per_directory_and_restores_exactly(repo, tmp_path):
    src = tmp_path / "src"
    files = make_source(src)
    info = backup_paths(repo, "tree", [src])
    assert info.tree_format == TREE_FORMAT_PER_DIRECTORY
    assert len(info.tree) == 1  # the top level: the root directory's entry

    reader = repo.reader(info)
    entries = list(reader.iter_entries())
    dirs = [e for e in entries if e.type == "dir"]
    assert {e.path for e in dirs} == {
        "src",
        "src/a",
        "src/a/b",
        "src/a/b/c",
        "src/a-sibling",
        "src/z",
        "src/empty-dir",
    }
    assert all(e.subtree for e in dirs)  # each directory's content is its own document
    paths = [e.path for e in entries]
    for d in dirs:  # each directory comes before everything under it
        assert all(paths.index(d.path) < paths.index(p) for p in paths if p.startswith(d.path + "/"))

    target = tmp_path / "restored"
    stats = restore_snapshot(repo, info, target)
    assert restored(target / "src") == files
    assert stats.files == len(files) and stats.symlinks == 1 and stats.dirs == 7
    assert os.readlink(target / "src" / "a" / "link") == "b/two.bin"
    assert (target / "src" / "a" / "b" / "two.bin").stat().st_mode & 0o777 == 0o600
    assert (target / "src" / "empty-dir").is_dir()


def test_unchanged_directories_are_stored_once_and_unchanged_files_are_not_read(repo, tmp_path):
    src = tmp_path / "src"
    make_source(src)
    settle(src)
    first = backup_paths(repo, "tree", [src])
    (src / "a" / "b" / "c" / "three.txt").write_bytes(b"changed\n")
    second = backup_paths(repo, "tree", [src])

    assert second.stats.reused_files == first.stats.files - 1  # only the changed file read again
    assert second.stats.new_chunks <= 1 + 5  # its chunk, then the documents of c, b, a, src and the top
    old = {e.path: e.subtree for e in repo.reader(first).iter_entries() if e.type == "dir"}
    new = {e.path: e.subtree for e in repo.reader(second).iter_entries() if e.type == "dir"}
    assert new["src/z"] == old["src/z"] and new["src/a-sibling"] == old["src/a-sibling"]
    assert new["src/a/b/c"] != old["src/a/b/c"]
    assert (
        repo.reader(second).read(
            next(e for e in repo.reader(second).iter_entries() if e.path == "src/a/b/c/three.txt")
        )
        == b"changed\n"
    )


def test_check_and_prune_keep_every_directory_tree_of_a_kept_snapshot(repo, tmp_path):
    src = tmp_path / "src"
    files = make_source(src)
    backup_paths(repo, "tree", [src])
    (src / "a" / "b" / "two.bin").write_bytes(b"replaced")
    files["a/b/two.bin"] = b"replaced"
    kept = backup_paths(repo, "tree", [src])

    repo.forget(KeepRules(last=1))
    report = repo.prune()
    assert report.packs_removed + report.packs_repacked >= 0
    check = repo.check(read_data=True)
    assert check.ok, [(p.kind, p.message) for p in check.problems]
    target = tmp_path / "restored"
    restore_snapshot(repo, kept, target)
    assert restored(target / "src") == files


def test_a_single_document_snapshot_lists_restores_checks_and_is_the_next_backups_parent(repo, tmp_path):
    src = tmp_path / "src"
    files = make_source(src)
    old = old_format_backup(repo, src)
    assert old.tree_format == TREE_FORMAT_SINGLE
    assert [s.id for s in repo.snapshots("tree")] == [old.id]

    target = tmp_path / "old-restored"
    restore_snapshot(repo, old, target)
    assert restored(target / "src") == files
    assert repo.check(read_data=True).ok

    new = backup_paths(repo, "tree", [src])  # the parent cache the old format left is used
    assert new.tree_format == TREE_FORMAT_PER_DIRECTORY
    assert new.stats.reused_files == len(files)
    third = backup_paths(repo, "tree", [src])  # and the streamed cache the new one left
    assert third.stats.reused_files == len(files)
    fourth = backup_paths(repo, "tree", [src])  # whose lines the third passed on as they were
    assert fourth.stats.reused_files == len(files)
    target = tmp_path / "new-restored"
    restore_snapshot(repo, third, target)
    assert restored(target / "src") == files


def test_a_tree_format_this_version_does_not_know_is_refused_in_one_line(repo, tmp_path):
    src = tmp_path / "src"
    make_source(src)
    info = backup_paths(repo, "tree", [src])
    info.tree_format = 3
    with pytest.raises(IntegrityError, match="tree format 3"):
        list(repo.reader(info).iter_entries())


def test_a_restore_planned_in_many_small_batches_writes_every_file_whole(repo, tmp_path, monkeypatch):
    from lifeboat.repo import reader

    monkeypatch.setattr(reader, "PLAN_FILES", 2)  # every batch boundary falls inside a directory
    monkeypatch.setattr(reader, "PLAN_CHUNKS", 3)  # and inside the chunks of a large file
    src = tmp_path / "src"
    files = make_source(src)
    files["a/b/large.bin"] = os.urandom(300 << 10)  # five 64 KiB chunks
    (src / "a" / "b" / "large.bin").write_bytes(files["a/b/large.bin"])
    info = backup_paths(repo, "tree", [src])
    target = tmp_path / "restored"
    stats = restore_snapshot(repo, info, target)
    assert restored(target / "src") == files
    assert stats.files == len(files) and stats.symlinks == 1


def test_an_unchanged_file_whose_chunks_were_pruned_is_read_again(repo, tmp_path):
    """The host's parent cache says every file is unchanged, but retention and prune have
    since deleted the snapshot and its packs: the walk must not take the parent's entries
    (their chunks are gone), and every file is read and restorable again."""
    src = tmp_path / "src"
    files = make_source(src)
    settle(src)
    first = backup_paths(repo, "tree", [src])
    for stored in list(repo.storage.list("snapshots/")):
        repo.storage.delete(stored.name)
    repo.prune()
    assert not list(repo.storage.list("data/"))  # nothing of the first backup is left

    again = backup_paths(repo, "tree", [src])
    assert again.stats.reused_files == 1  # the empty file alone: it has no chunks to lose
    assert again.stats.new_bytes >= first.stats.bytes == sum(len(d) for d in files.values())
    target = tmp_path / "restored"
    restore_snapshot(repo, again, target)
    assert restored(target / "src") == files
    assert repo.check(read_data=True).ok


def test_a_parent_entry_this_version_cannot_read_is_read_again_not_copied(repo, tmp_path):
    """The walk copies an unchanged file's entry from the parent cache into the new tree as
    stored. A cache written by a newer lifeboat (a field this version does not know) or
    damaged on disk must not reach the tree, where every restore of that directory would
    fail: the file is read again instead."""
    src = tmp_path / "src"
    files = make_source(src)
    backup_paths(repo, "tree", [src])
    cache = repo.parent_cache("tree")
    assert cache is not None and cache.path.exists()
    rewrite(  # MAC'd again: as the writer itself would have
        cache,
        [
            line.replace(b'"type":"file"', b'"type":"file","from_the_future":1')
            for line in verified_lines(cache)
        ],
    )

    again = backup_paths(repo, "tree", [src])
    assert again.stats.reused_files == 0
    target = tmp_path / "restored"
    restore_snapshot(repo, again, target)
    assert restored(target / "src") == files


def test_a_parent_entry_with_null_meta_is_taken_once(repo, tmp_path):
    """A stored ``"meta": null`` is an entry a restore reads (no metadata): the unchanged
    file is taken from the parent, once, not put into the tree and then read again."""
    src = tmp_path / "src"
    files = make_source(src)
    settle(src)
    first = backup_paths(repo, "tree", [src])
    cache = repo.parent_cache("tree")
    assert cache is not None
    rewrite(
        cache,
        [line.replace(b'"type":"file"', b'"type":"file","meta":null') for line in verified_lines(cache)],
    )

    again = backup_paths(repo, "tree", [src])
    assert again.stats.reused_files == first.stats.files == again.stats.files
    paths = [e.path for e in repo.reader(again).iter_entries()]
    assert len(paths) == len(set(paths))
    target = tmp_path / "restored"
    restore_snapshot(repo, again, target)
    assert restored(target / "src") == files


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"chunks": ["AB" * 32]}, "malformed chunk ids"),  # uppercase: not how ids are written
        ({"chunks": ["ab" * 31 + "a"]}, "malformed chunk ids"),
        ({"chunks": "ab" * 32}, "malformed chunk ids"),  # a string, not a list
        ({"chunks": [None]}, "malformed chunk ids"),
        ({"type": "dir", "subtree": ["zz" * 32]}, "malformed subtree ids"),
        ({"subtree": ["ab" * 32]}, "gives a subtree to the file"),
    ],
)
def test_one_malformed_entry_among_many_fails_the_document(bad: dict[str, object], message: str) -> None:
    """Tree documents are checked id column by id column: one bad entry among a thousand
    good ones is still found, and named."""
    good = [{"path": f"f{i}", "type": "file", "size": 1, "chunks": [f"{i:064x}"]} for i in range(1000)]
    raw = orjson.dumps({"entries": [*good[:500], {"path": "bad", "type": "file", **bad}, *good[500:]]})
    with pytest.raises(IntegrityError, match=message):
        decode_document(raw, "snapshot x")
    assert len(decode_document(orjson.dumps({"entries": good}), "snapshot x")) == 1000


def test_walk_leaves_out_excluded_names_and_everything_under_them(tmp_path: Path) -> None:
    """A files asset's ``exclude`` patterns match names at every level: an excluded
    directory's whole content stays out, other names keep their walk order."""
    root = tmp_path / "data"
    (root / "cache" / "deep").mkdir(parents=True)
    (root / "cache" / "deep" / "kept-name.txt").write_text("under an excluded directory")
    (root / "sub").mkdir()
    for name in ("a.txt", "b.tmp", "sub/c.txt", "sub/d.tmp", "sub/cache"):
        (root / name).write_text(name)
    names = [item.name for item in walk([root], exclude=["*.tmp", "cache"])]
    assert names == ["data", "data/a.txt", "data/sub", "data/sub/c.txt"]
    assert len([item.name for item in walk([root])]) == 10  # without patterns, everything


def _entry_json(**fields: object) -> bytes:
    base: dict[str, object] = {
        "path": "src/a.txt",
        "type": "file",
        "size": 3,
        "mode": 0o644,
        "sha256": "ab" * 32,
        "chunks": ["cd" * 32],
    }
    return orjson.dumps({k: v for k, v in (base | fields).items() if v is not ...})


@pytest.mark.parametrize(
    "encoded",
    [
        _entry_json(),
        _entry_json(meta={"fingerprint": "x"}),
        _entry_json(chunks=...),  # an empty file: no chunks listed
        _entry_json(type=...),  # a file by default
        _entry_json(path="src/b.txt"),  # another file's entry
        _entry_json(type="dir"),
        _entry_json(type="symlink", target="a"),
        _entry_json(size="3"),
        _entry_json(size=True),
        _entry_json(size=...),
        _entry_json(chunks="cd" * 32),
        _entry_json(chunks=["CD" * 32]),  # uppercase: no id this version writes
        _entry_json(chunks=["cd" * 31]),
        _entry_json(chunks=[7]),
        _entry_json(subtree=["ef" * 32]),
        _entry_json(subtree={}),
        _entry_json(colour="red"),  # a field this version does not know
        _entry_json(path=...),
        b'["src/a.txt"]',
        b"{not json",
        b"null",
    ],
)
def test_an_unchanged_file_is_taken_only_if_a_restore_would_read_its_entry(encoded: bytes) -> None:
    """An unchanged backup checks each parent entry with decode_file_entry instead of
    decoding an Entry: it must accept exactly the entries decode_document reads as the
    regular file asked for, with an integer size, and give their chunks, size and meta."""
    try:
        [entry] = decode_document(b'{"entries":[' + encoded + b"]}", "test")
        readable = entry.type == "file" and entry.path == "src/a.txt" and type(entry.size) is int
    except (IntegrityError, ValueError):
        readable = False
    fields = decode_file_entry(encoded, "src/a.txt")
    assert (fields is not None) == readable
    if fields is not None:
        assert fields == (entry.chunks, entry.size, entry.meta)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_batch_whose_read_fails_leaves_none_of_its_files_open(repo, tmp_path, monkeypatch):
    """Small files are opened a batch at once, ahead of their read (lifeboat/readahead.py):
    when one of them cannot be read (a disk's read error, injected here: a file turned into
    a directory since the walk is now left out, not a failure) the backup fails, and the
    files after it, opened but never read, are closed too."""
    import lifeboat.assets.files.tree as tree
    from lifeboat.errors import StorageError

    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.bin", "b.bin", "c.bin", "d.bin"):
        (src / name).write_bytes(os.urandom(500))
    read_as_is = tree._Feeder._entry_of

    def entry_of_or_read_error(self, item, opened):
        if item.name.endswith("/b.bin"):
            raise StorageError(f"cannot read {item.path}: Input/output error")
        return read_as_is(self, item, opened)

    monkeypatch.setattr(tree._Feeder, "_entry_of", entry_of_or_read_error)
    before = open_descriptors()
    with pytest.raises(StorageError, match="Input/output error"):
        backup_paths(repo, "tree", [src])
    assert open_descriptors() == before
    assert repo.snapshots() == []  # nothing committed


def test_files_opened_ahead_leave_room_under_a_low_open_files_limit(repo, tmp_path):
    """Four readers of batches with a large file and the small-file reader each open their
    batch's small files ahead: under a limit of 128 open files, 64 a batch took every
    descriptor and the large files, packs and index could not be opened (EMFILE). A batch
    holds a 32nd of the limit at most; the rest is read the usual way."""
    import resource

    src = tmp_path / "src"
    files = {}
    for d in range(60):
        for i in range(63):
            files[f"d{d:02}/f{i:02}.bin"] = os.urandom(200)
        files[f"d{d:02}/big.bin"] = os.urandom(200 << 10)
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(128, open_descriptors() + 64), hard))
    try:
        info = backup_paths(repo, "tree", [src])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    restore_snapshot(repo, info, tmp_path / "restored")
    assert restored(tmp_path / "restored" / "src") == files


def test_an_entry_is_stored_with_every_field_that_is_not_empty_in_field_order() -> None:
    """Entry.to_json, written field by field for speed, against the rule it implements
    over ``dataclasses.fields``: a field added to Entry and left out of to_json fails here
    (it would be silently missing from every stored tree), and so does a change of order,
    which would change every tree's bytes and so its id."""
    from dataclasses import fields

    def by_rule(entry: Entry) -> dict[str, object]:
        data: dict[str, object] = {"path": entry.path, "type": entry.type}
        for f in fields(Entry)[2:]:
            value = getattr(entry, f.name)
            if value not in (None, "", [], {}):
                data[f.name] = value
        return data

    chunk = "ab" * 32
    odd: list[object] = [0, None, "", [], {}, 7, "x", [chunk], {"k": "v"}, False, 0.0]
    for i in range(len(odd) ** 2):
        values = {f.name: odd[(i * (n + 3)) % len(odd)] for n, f in enumerate(fields(Entry)[2:])}
        entry = Entry("dir/file", "file", **values)  # type: ignore[arg-type]
        stored = entry.to_json()
        assert stored == by_rule(entry) and list(stored) == list(by_rule(entry))
        assert orjson.dumps(stored) == orjson.dumps(by_rule(entry))


@pytest.mark.parametrize("size", [0, 1, 64 << 10, (64 << 10) - 1, (64 << 10) + 1, 3 * (64 << 10)])
def test_content_in_memory_is_stored_as_the_same_stream_would_be(repo: Repository, size: int) -> None:
    """BlobWriter.store_content (a keys file read whole to be fingerprinted) against
    store_stream of the same bytes: the same chunk ids, size and SHA-256, and the same bytes
    counted as stored, whether the content is empty, under, at or over one chunk."""
    import io

    from lifeboat.progress import NO_PROGRESS

    content = os.urandom(size)
    with repo.backup("a", "files") as first:
        from_memory = first.writer.store_content(content, 64 << 10, NO_PROGRESS)
        counted = (first.writer.stats.chunks, first.writer.stats.bytes)
    with repo.backup("b", "files") as second:
        streamed = second.writer.store_stream(io.BytesIO(content), 64 << 10, NO_PROGRESS)
        assert (second.writer.stats.chunks, second.writer.stats.bytes) == counted
    assert from_memory == streamed
    assert from_memory[1] == size and len(from_memory[0]) == -(-size // (64 << 10))
