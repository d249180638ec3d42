"""Restores with --force into targets holding planted symlinks never write outside the
target (checked by a manifest of a sentinel directory: content, mode, owner, mtime), and
the target ends up with exactly the snapshot's content. Files, keys, and objects into a
dir:// target, through the real `lifeboat` executable, as root."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import LifeboatCli, PolicyBuilder

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attack matters as root; owners need root")


@dataclass
class EscapeEnv(LifeboatCli):
    """Files, keys and a dir:// objects asset; the recovery key split to one custodian."""

    root: Path = field(default=Path("."))

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    @property
    def share(self) -> Path:
        return self.root / "shares" / "alice.share"

    def backup(self, asset: str) -> str:
        return str(json.loads(self.run("backup", asset, "--json").stdout)[0]["snapshot"])

    def restore(
        self, asset: str, snapshot: str, target: str, *extra: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "restore",
            asset,
            "--snapshot",
            snapshot,
            "--target",
            target,
            "--share",
            str(self.share),
            *extra,
            check=check,
        )


def make_sentinel(root: Path) -> None:
    """Something a restore must never touch: files, a directory, odd owners and modes."""
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0\n")
    (root / "victim").write_text("do not overwrite\n")
    (root / "victim2").write_text("nor this one\n")
    os.chown(root / "victim", 1234, 4321)
    os.chmod(root / "victim", 0o640)
    os.chmod(root / "etc", 0o711)
    for path in (root / "etc" / "passwd", root / "victim", root / "victim2", root / "etc", root):
        os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))


def manifest(root: Path, *, times: bool = True) -> dict[str, tuple[object, ...]]:
    """Every entry under (and including) ``root``: type, mode, owner, mtime, and content or
    link target, without following links."""
    result: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = Path(dirpath) / name if name != "." else Path(dirpath)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                content: object = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = None
            mtime = st.st_mtime_ns if times and not stat.S_ISLNK(st.st_mode) else None
            result[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, mtime, content)
    return result


def make_env(root: Path) -> EscapeEnv:
    policy = (
        PolicyBuilder()
        .repository(f"file://{root}/repo")
        .data_class("standard", rpo="1d", rto="1h")
        .files("config", [root / "config"])
        .keys("platform-keys", [root / "platform-keys"])
        .objects("media", f"dir://{root}/media")
        .table("escrow", threshold=1, custodians=["alice"])
        .write(root / "lifeboat.toml")
    )
    env = EscapeEnv(policy, root=root)
    env.env["LIFEBOAT_ACTOR"] = "test"
    make_sentinel(env.outside)
    return env


@pytest.fixture
def env(tmp_path: Path) -> EscapeEnv:
    e = make_env(tmp_path)
    (tmp_path / "config" / "etc").mkdir(parents=True)
    (tmp_path / "config" / "etc" / "app.conf").write_text("setting = 1\n")
    (tmp_path / "config" / "etc" / "passwd").write_text("app:x:1000:1000\n")
    (tmp_path / "config" / "a.conf").write_text("a = 2\n")
    os.chown(tmp_path / "config" / "a.conf", 2000, 2001)
    os.chmod(tmp_path / "config" / "etc", 0o750)
    (tmp_path / "platform-keys" / "tls").mkdir(parents=True)
    (tmp_path / "platform-keys" / "tls" / "server.key").write_text("-----BEGIN PRIVATE KEY-----\nx\n")
    (tmp_path / "platform-keys" / "signing.pem").write_text("-----BEGIN PRIVATE KEY-----\ny\n")
    (tmp_path / "media" / "docs").mkdir(parents=True)
    (tmp_path / "media" / "docs" / "a.txt").write_bytes(os.urandom(3000))
    (tmp_path / "media" / "top.bin").write_bytes(os.urandom(5000))
    e.run("init", "--shares-out", str(tmp_path / "shares"))
    return e


def plant(target: Path, links: dict[str, Path]) -> None:
    for rel, points_to in links.items():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).symlink_to(points_to)


def test_files_force_replaces_planted_links_and_never_writes_through_them(env: EscapeEnv) -> None:
    snap = env.backup("config")
    expected = manifest(env.root / "config")
    target = env.root / "target"
    plant(
        target,
        {
            "config/etc": env.outside / "etc",  # a directory link pointing outside
            "config/a.conf": env.outside / "victim",  # a file link pointing outside
            "config/.a.conf.lifeboat-restore": env.outside / "victim2",  # the temp name
        },
    )
    before = manifest(env.outside)

    env.restore("config", snap, str(target), "--force")

    assert manifest(env.outside) == before
    assert manifest(target / "config") == expected
    assert (target / "config" / "a.conf").stat().st_uid == 2000  # owners restored as root


def test_restoring_an_older_snapshot_over_a_newer_one_with_a_link_stays_inside(env: EscapeEnv) -> None:
    s1 = env.backup("config")  # etc/ is a real directory, mode 0750
    s1_tree = manifest(env.root / "config")
    shutil.rmtree(env.root / "config" / "etc")
    (env.root / "config" / "etc").symlink_to(env.outside / "etc")  # S2: etc -> outside
    s2 = env.backup("config")
    before = manifest(env.outside)
    target = env.root / "target"

    env.restore("config", s2, str(target))
    assert os.readlink(target / "config" / "etc") == str(env.outside / "etc")
    env.restore("config", s1, str(target), "--force")

    assert manifest(env.outside) == before  # nothing landed in, nor chmod'ed, the link's target
    assert manifest(target / "config") == s1_tree
    assert stat.S_IMODE(os.lstat(target / "config" / "etc").st_mode) == 0o750


def test_keys_force_replaces_planted_links(env: EscapeEnv) -> None:
    snap = env.backup("platform-keys")
    target = env.root / "keys-target"
    plant(
        target,
        {
            "platform-keys/tls": env.outside / "etc",
            "platform-keys/signing.pem": env.outside / "victim",
            "platform-keys/.signing.pem.lifeboat-restore": env.outside / "victim2",
        },
    )
    before = manifest(env.outside)

    out = json.loads(env.restore("platform-keys", snap, str(target), "--force", "--json").stdout)

    assert manifest(env.outside) == before
    assert out["ok"] and all(k["match"] for k in out["keys"]) and len(out["keys"]) == 2
    restored = manifest(target / "platform-keys", times=False)
    assert set(restored) == {".", "tls", "tls/server.key", "signing.pem"}
    for rel in ("tls/server.key", "signing.pem"):
        original = (env.root / "platform-keys" / rel).read_bytes()
        assert (target / "platform-keys" / rel).read_bytes() == original
        assert stat.S_IMODE(os.lstat(target / "platform-keys" / rel).st_mode) == 0o600
    assert stat.S_ISDIR(os.lstat(target / "platform-keys" / "tls").st_mode)


def test_objects_dir_target_force_replaces_planted_links(env: EscapeEnv) -> None:
    snap = env.backup("media")
    target = env.root / "media-target"
    plant(
        target,
        {
            "docs": env.outside / "etc",
            "top.bin": env.outside / "victim",
            ".top.bin.lifeboat": env.outside / "victim2",
        },
    )
    before = manifest(env.outside)

    env.restore("media", snap, f"dir://{target}", "--force")

    assert manifest(env.outside) == before
    restored = {str(p.relative_to(target)): p for p in target.rglob("*")}
    assert set(restored) == {"docs", "docs/a.txt", "top.bin"}
    for rel in ("docs/a.txt", "top.bin"):
        assert not restored[rel].is_symlink()
        assert restored[rel].read_bytes() == (env.root / "media" / rel).read_bytes()
    assert not (target / "docs").is_symlink()


def test_objects_in_place_into_a_dir_source_never_follows_its_links(env: EscapeEnv) -> None:
    snap = env.backup("media")
    expected = manifest(env.root / "media", times=False)
    media = env.root / "media"
    shutil.rmtree(media / "docs")
    (media / "docs").symlink_to(env.outside / "etc")  # after the backup: docs -> outside
    (media / "top.bin").unlink()
    (media / "top.bin").symlink_to(env.outside / "victim")
    (media / "new.bin").write_bytes(b"written after the snapshot")
    before = manifest(env.outside)

    env.run("restore", "media", "--snapshot", snap, "--in-place", "--yes", "--share", str(env.share))

    assert manifest(env.outside) == before
    after = manifest(media, times=False)
    for rel in ("docs/a.txt", "top.bin"):
        assert after[rel][4] == expected[rel][4] and not (media / rel).is_symlink()
    assert set(after) == set(expected)  # new.bin deleted, nothing else
