"""A keys restore of many small files: the writer process reads each file it made back
(lifeboat/filewriters.py) and fingerprints the ones that hold exactly the verified bytes
sent, and the restore reads back itself every file the writer did not confirm. Real
processes and files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from lifeboat import filewriters
from lifeboat.assets.keys.capture import MAX_KEY_FILE, _Fingerprints
from lifeboat.assets.kind import RestoreRequest
from lifeboat.assets.registry import load_policy
from lifeboat.crypto.credentials import Credentials
from lifeboat.crypto.fingerprint import fingerprint, fingerprint_hash
from lifeboat.repo.model import Entry
from lifeboat.services.restore import restore
from lifeboat.targetdir import TargetDir
from tests.keys.test_keys import KeysEnv, keys_env, shares, tree
from tests.repo.test_restore_writer import Recorded, writers

__all__ = ["writers"]  # a fixture

FILES = 700  # more than filewriters.WRITER_FROM: the writer process is used
NO_PASSPHRASE = serialization.NoEncryption()
KEY = bytes(range(32))  # a fingerprint key, for the restore's own logic


def many_key_files(root: Path) -> None:
    """Small files, some of them PEM-armoured (their fingerprint is of their public key when
    they parse, a keyed hash when not), in three directories."""
    for i in range(FILES):
        d = root / f"d{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        body = hashlib.sha256(str(i).encode()).digest() * (1 + i % 30)
        if i % 10 == 0:
            body = b"-----BEGIN PRIVATE KEY-----\n" + body.hex().encode() + b"\n-----END PRIVATE KEY-----\n"
        (d / f"k{i:04}.key").write_bytes(body)


def site(tmp_path: Path) -> KeysEnv:
    many_key_files(tmp_path / "platform-keys")
    env = keys_env(tmp_path)
    env.run("init", "--shares-out", str(tmp_path / "shares"))
    env.run("backup", "platform-keys")
    return env


def test_many_key_files_come_back_each_fingerprint_matching(tmp_path: Path) -> None:
    env = site(tmp_path)
    target = tmp_path / "restored"

    out = env.json("restore", "platform-keys", "--target", str(target), *shares(env, "alice", "carol"))

    assert out["ok"] and out["files"] == FILES
    assert len(out["keys"]) == FILES and all(k["match"] for k in out["keys"])
    assert [k["path"] for k in out["keys"]] == sorted(k["path"] for k in out["keys"])  # the tree's order
    restored = tree(target / "platform-keys")
    assert {p: body for p, (body, _) in restored.items()} == {
        p: body for p, (body, _) in tree(tmp_path / "platform-keys").items()
    }
    assert {mode for _, mode in restored.values()} == {0o600}


def test_the_writer_process_reads_each_file_back_and_each_fingerprint_matches_the_backup(
    tmp_path: Path, writers: list[Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer process reads every file it made back (the restore fingerprints those from
    the bytes it sent, never reading them again itself): PEM keys' fingerprints and keyed
    hashes alike are the ones the backup recorded. The restore runs in this process, to see
    its writers."""
    real = ed25519.Ed25519PrivateKey.generate()
    pem = real.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, NO_PASSPHRASE)
    (tmp_path / "platform-keys" / "d0").mkdir(parents=True)
    (tmp_path / "platform-keys" / "d0" / "real.pem").write_bytes(pem)
    env = site(tmp_path)
    shares_given = [env.root / "shares" / f"{n}.share" for n in ("alice", "carol")]
    request = RestoreRequest("platform-keys", str(tmp_path / "restored"))

    read_here: list[str] = []  # files the restore read back itself
    on_disk = _Fingerprints._on_disk

    def counted(self: _Fingerprints, tree: TargetDir, path: str) -> tuple[str | None, str | None]:
        read_here.append(path)
        return on_disk(self, tree, path)

    monkeypatch.setattr(_Fingerprints, "_on_disk", counted)

    outcome = restore(load_policy(env.policy), Credentials(shares=shares_given), request)

    keys = outcome.result.details["keys"]
    assert outcome.result.ok and len(keys) == FILES + 1 and all(k["match"] for k in keys)
    assert writers and sum(w.read_back for w in writers) == FILES + 1 and read_here == []
    public = real.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    taken = [k["fingerprint"] for k in keys]
    assert "sha256:" + hashlib.sha256(public).hexdigest() in taken  # the key parsed
    assert sum(f.startswith("keyed:") for f in taken) == FILES


@contextmanager
def made_file(dir_fd: int, name: str, body: bytes) -> Iterator[tuple[int, os.stat_result]]:
    """A file made as the writer makes one: its descriptor (open for reading too) and stat."""
    fd = os.open(name, filewriters.MADE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        made = os.fstat(fd)
        os.write(fd, body)
        yield fd, made
    finally:
        os.close(fd)


def test_the_writer_confirms_only_a_file_that_reads_back_exactly_as_sent(tmp_path: Path) -> None:
    """Pure logic of the writer's check, on real files: equal bytes only, under a name that
    still leads to the file it made (not to a link to it, nor to a copy put in its place)."""
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    data = os.urandom(3000)
    cases = {"same": data, "changed": data[:-1] + b"x", "longer": data + b"\0", "shorter": data[:-1]}

    def link(path: Path) -> None:
        path.unlink()
        path.symlink_to(tmp_path / "same")

    def copy(path: Path) -> None:
        path.rename(tmp_path / "moved")
        path.write_bytes(data)

    replace: dict[str, Callable[[Path], None]] = {"link": link, "copy": copy, "missing": Path.unlink}
    checked = {}
    try:
        for name, body in [*cases.items(), *((name, data) for name in replace)]:
            with made_file(dir_fd, name, body) as (fd, made):
                if name in replace:
                    replace[name](tmp_path / name)
                checked[name] = filewriters._holds(dir_fd, name, fd, made, data)
    finally:
        os.close(dir_fd)

    assert checked == {n: n == "same" for n in [*cases, *replace]}
    assert (tmp_path / "copy").read_bytes() == data  # the same bytes, another file: not confirmed


def test_into_a_target_that_holds_files_each_is_read_back_here(tmp_path: Path) -> None:
    """No writer process for a target that is not empty (--force): the restore writes every
    file itself and reads each back from the disk. A file that was in the way is replaced,
    and its fingerprint is the backed-up one."""
    env = site(tmp_path)
    target = tmp_path / "restored"
    in_the_way = target / "platform-keys" / "d1" / "k0001.key"
    in_the_way.parent.mkdir(parents=True)
    in_the_way.write_bytes(b"what was there before the restore")

    out = env.json(
        "restore", "platform-keys", "--target", str(target), "--force", *shares(env, "bob", "carol")
    )

    assert out["ok"] and len(out["keys"]) == FILES and all(k["match"] for k in out["keys"])
    assert in_the_way.read_bytes() == (tmp_path / "platform-keys" / "d1" / "k0001.key").read_bytes()


def test_a_file_read_back_through_a_directory_moved_away_meanwhile_is_not_confirmed(tmp_path: Path) -> None:
    """The writer holds parent directories open. One moved away and replaced between two
    batches still takes the second batch's file (in the moved directory), but the path no
    longer leads there: the writer names the file for the restore to write and read back
    itself, instead of confirming it."""
    root = tmp_path / "target"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        dirs = filewriters._Directories(fd)
        (root / "d").mkdir()
        spec = ("d", "a.key", b"first", 0o600, -1, -1, 0)
        assert filewriters._write_batch(dirs, 0, [spec], True) == (0, 1, [], None, [0])
        (root / "d").rename(root / "moved")
        (root / "d").mkdir()

        reply = filewriters._write_batch(dirs, 1, [("d", "b.key", b"second", 0o600, -1, -1, 0)], True)
        without = filewriters._write_batch(dirs, 2, [("d", "c.key", b"third", 0o600, -1, -1, 0)], True)
    finally:
        os.close(fd)

    assert reply == (1, 0, [0], None, [])  # written into the moved directory, not confirmed
    assert (root / "moved" / "b.key").read_bytes() == b"second"
    assert without == (2, 1, [], None, [0])  # opened anew after that: confirmed
    assert (root / "d" / "c.key").read_bytes() == b"third"


def test_a_file_made_through_a_directory_put_down_and_reopened_within_a_batch_is_not_confirmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer keeps HELD_DIRS parents open (one here). Within one batch: a file goes into
    the held `d`, which had been moved away and replaced; `e` puts `d` down; the next file
    for `d` opens the new one. Only that second file is where its path leads."""
    monkeypatch.setattr(filewriters, "HELD_DIRS", 1)
    root = tmp_path / "target"
    (root / "d").mkdir(parents=True)
    (root / "e").mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        dirs = filewriters._Directories(fd)
        assert filewriters._write_batch(dirs, 0, [("d", "a.key", b"a", 0o600, -1, -1, 0)], True)[1] == 1
        (root / "d").rename(root / "moved")
        (root / "d").mkdir()

        reply = filewriters._write_batch(
            dirs,
            1,
            [
                (rel, name, name.encode(), 0o600, -1, -1, 0)
                for rel, name in [("d", "b.key"), ("e", "x.key"), ("d", "c.key")]
            ],
            True,
        )
    finally:
        os.close(fd)

    assert (root / "moved" / "b.key").exists() and (root / "d" / "c.key").exists()
    # b.key (in the moved directory) named for the restore; only the others read back equal
    assert reply == (1, 2, [0], None, [1, 2])


def test_a_pipe_in_place_of_a_file_is_not_confirmed_and_does_not_block(tmp_path: Path) -> None:
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with made_file(dir_fd, "fifo", b"") as (fd, made):
            (tmp_path / "fifo").unlink()
            os.mkfifo(tmp_path / "fifo")
            assert filewriters._holds(dir_fd, "fifo", fd, made, b"") is False
    finally:
        os.close(dir_fd)


class _Keyed:
    """Pure logic: the keyed hash a repository would supply."""

    @staticmethod
    def keyed_hash(data: bytes) -> str:
        return fingerprint_hash(KEY, data)


def entry(path: str, content: bytes | None, type: str = "file") -> Entry:
    """A tree entry as a keys snapshot records it (``None``: recorded without a fingerprint)."""
    return Entry(
        path=path, type=type, meta={} if content is None else {"fingerprint": fingerprint_of(content)}
    )


def test_a_file_that_cannot_be_read_back_fails_with_the_reason_and_two_entries_of_a_path_go_by_the_disk(
    tmp_path: Path,
) -> None:
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "twice.key").write_bytes(b"second")
    check = _Fingerprints(_Keyed())  # type: ignore[arg-type]

    first, second = entry("k/twice.key", b"first"), entry("k/twice.key", b"second")
    with target(tmp_path) as tree:
        check.read_back(first, b"first")  # confirmed by the writer, overwritten later
        check.written(tree, [first, entry("k/gone.key", b"x"), entry("k/missing/x.key", b"y")])
        check.written(tree, [second])
        check.finished(tree, [])
    rows = {(r["path"], r["fingerprint"]): r for r in check.rows()}

    assert rows["k/twice.key", fingerprint_of(b"first")]["match"] is False
    assert rows["k/twice.key", fingerprint_of(b"second")]["match"] is True
    gone = rows["k/gone.key", fingerprint_of(b"x")]
    assert gone["match"] is False and gone["error"] == "cannot read it back: No such file or directory"
    assert rows["k/missing/x.key", fingerprint_of(b"y")]["error"].startswith("cannot read it back")
    assert not (tmp_path / "k" / "missing").exists()  # reading made no directory


def test_a_key_file_replaced_later_by_a_link_or_directory_of_its_name_does_not_match(tmp_path: Path) -> None:
    """Two roots of one keys asset can record one path twice, as a file and then as a link
    or a directory: the file, confirmed when its batch was written, is judged again by what
    the path holds at the end."""
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "now-a-link.key").symlink_to("elsewhere")
    (tmp_path / "k" / "now-a-dir.key").mkdir()
    (tmp_path / "k" / "kept.key").write_bytes(b"kept")
    check = _Fingerprints(_Keyed())  # type: ignore[arg-type]
    files = [entry(f"k/{n}", n.encode()) for n in ("now-a-link.key", "now-a-dir.key", "kept.key")]

    with target(tmp_path) as tree:
        for e in files:  # each read back equal by the writer when its batch was written
            check.read_back(e, e.path.removeprefix("k/").encode())
        check.written(tree, files)
        check.written(tree, [entry("k/now-a-link.key", None, type="symlink")])
        check.finished(tree, [entry("k/now-a-dir.key", None, type="dir")])
    rows = {r["path"]: r for r in check.rows()}

    assert rows["k/kept.key"]["match"] is True
    assert rows["k/now-a-link.key"]["match"] is False
    assert rows["k/now-a-dir.key"]["match"] is False
    assert rows["k/now-a-dir.key"]["error"] == "cannot read it back: not a regular file"


def test_a_null_fingerprint_never_matches_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    """A snapshot whose entry records no usable fingerprint (null) and a file that is not
    there: "nothing" equal to "nothing" is no match."""
    check = _Fingerprints(_Keyed())  # type: ignore[arg-type]
    with target(tmp_path) as tree:
        check.written(tree, [Entry(path="gone.key", meta={"fingerprint": None})])
        check.finished(tree, [])

    (row,) = check.rows()
    assert row["match"] is False and row["error"].startswith("cannot read it back")


def test_reading_back_a_pipe_or_an_oversized_file_neither_blocks_nor_reads_it_all(tmp_path: Path) -> None:
    """A pipe planted where a key file was restored would block a plain read forever."""
    os.mkfifo(tmp_path / "fifo.key")
    (tmp_path / "big.key").write_bytes(b"x" * (MAX_KEY_FILE + 4096))
    check = _Fingerprints(_Keyed())  # type: ignore[arg-type]

    with target(tmp_path) as tree:
        assert len(tree.read("big.key", limit=MAX_KEY_FILE)) == MAX_KEY_FILE + 1
        check.written(tree, [entry("fifo.key", b"key"), entry("big.key", b"x" * 100)])
        check.finished(tree, [])

    rows = {r["path"]: r for r in check.rows()}
    assert rows["fifo.key"] == rows["fifo.key"] | {
        "match": False,
        "error": "cannot read it back: not a regular file",
    }
    assert rows["big.key"]["match"] is False


def test_a_file_whose_directory_was_moved_away_and_replaced_is_read_back_where_its_path_leads(
    tmp_path: Path,
) -> None:
    """The restore holds the descriptor of each directory it wrote into. An insider who moves
    that directory away and puts another with their own key at the path must not have the
    restore read the moved file back and call the path's bytes a match (the common case: a
    keys restore of fewer than ``WRITER_FROM`` files reads every file back itself)."""
    restored = tmp_path / "restored"
    check = _Fingerprints(_Keyed())  # type: ignore[arg-type]

    with target(restored) as tree:
        held = tree.acquire("d")  # the restore writes d/id.key through this descriptor
        fd = os.open("id.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=held)
        os.write(fd, b"the real key")
        os.close(fd)
        tree.release("d")
        (restored / "d").rename(restored / "moved")
        (restored / "d").mkdir()
        (restored / "d" / "id.key").write_bytes(b"ATTACKER KEY")

        assert tree.read("d/id.key") == b"ATTACKER KEY"
        check.written(tree, [entry("d/id.key", b"the real key")])
        check.finished(tree, [])

    (row,) = check.rows()
    assert row["match"] is False


@contextmanager
def target(root: Path) -> Iterator[TargetDir]:
    tree = TargetDir(root)
    try:
        yield tree
    finally:
        tree.close()


def fingerprint_of(content: bytes) -> str:
    return fingerprint(content, _Keyed.keyed_hash)[1]
