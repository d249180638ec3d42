"""A keys restore of many small files: the writer process reads each file it made back
(lifeboat/filewriters.py), the restore fingerprints it from the verified bytes it sent,
and reads back itself every file the writer did not confirm. Real processes and files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lifeboat import filewriters
from lifeboat.crypto.fingerprint import fingerprint
from tests.keys.test_keys import KeysEnv, keys_env, shares, tree

FILES = 700  # more than filewriters.WRITER_FROM: the writer process is used


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


def test_the_writer_confirms_only_a_file_that_reads_back_exactly_as_sent(tmp_path: Path) -> None:
    """Pure logic of the writer's check, on real files: equal bytes only, through no link."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        data = os.urandom(3000)
        cases = {"same": data, "changed": data[:-1] + b"x", "longer": data + b"\0", "shorter": data[:-1]}
        for name, body in cases.items():
            (tmp_path / name).write_bytes(body)
        (tmp_path / "link").symlink_to(tmp_path / "same")

        checked = {name: filewriters._reads_back_as(fd, name, data) for name in [*cases, "link", "missing"]}
    finally:
        os.close(fd)

    assert checked == {n: n == "same" for n in [*cases, "link", "missing"]}


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
        assert filewriters._write_batch(dirs, 0, [spec], read_back=True) == (0, 1, [], None)
        (root / "d").rename(root / "moved")
        (root / "d").mkdir()

        reply = filewriters._write_batch(
            dirs, 1, [("d", "b.key", b"second", 0o600, -1, -1, 0)], read_back=True
        )
        without = filewriters._write_batch(
            dirs, 2, [("d", "c.key", b"third", 0o600, -1, -1, 0)], read_back=True
        )
    finally:
        os.close(fd)

    assert reply == (1, 0, [0], None)  # written into the moved directory, not confirmed
    assert (root / "moved" / "b.key").read_bytes() == b"second"
    assert without == (2, 1, [], None)  # the directory opened anew after that: confirmed
    assert (root / "d" / "c.key").read_bytes() == b"third"


def test_a_pipe_in_place_of_a_file_is_not_confirmed_and_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert filewriters._reads_back_as(fd, "fifo", b"") is False
    finally:
        os.close(fd)


class _Keyed:
    """Pure logic: the keyed hash a repository would supply."""

    @staticmethod
    def keyed_hash(data: bytes) -> str:
        return hashlib.sha256(b"k" + data).hexdigest()[:32]


def test_a_file_that_cannot_be_read_back_fails_with_the_reason_and_two_entries_of_a_path_go_by_the_disk(
    tmp_path: Path,
) -> None:
    from lifeboat.assets.keys.capture import _Fingerprints
    from lifeboat.repo.model import Entry

    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "twice.key").write_bytes(b"second")
    check = _Fingerprints(_Keyed(), tmp_path)  # type: ignore[arg-type]

    def entry(path: str, content: bytes) -> Entry:
        return Entry(path=path, meta={"fingerprint": fingerprint_of(content)})

    first, second = entry("k/twice.key", b"first"), entry("k/twice.key", b"second")
    check.read_back(first, b"first")  # confirmed by the writer in its batch, overwritten later
    check.written([first, entry("k/gone.key", b"x"), entry("k/missing/x.key", b"y")])
    check.written([second])
    rows = {(r["path"], r["fingerprint"]): r for r in check.rows()}

    assert rows["k/twice.key", fingerprint_of(b"first")]["match"] is False
    assert rows["k/twice.key", fingerprint_of(b"second")]["match"] is True
    gone = rows["k/gone.key", fingerprint_of(b"x")]
    assert gone["match"] is False and gone["error"] == "cannot read it back: No such file or directory"
    assert rows["k/missing/x.key", fingerprint_of(b"y")]["error"].startswith("cannot read it back")
    assert not (tmp_path / "k" / "missing").exists()  # reading made no directory


def fingerprint_of(content: bytes) -> str:
    return fingerprint(content, _Keyed.keyed_hash)[1]
