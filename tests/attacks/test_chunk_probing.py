"""A compromised backup host probing another host's data by chunk id (issue #14, the
"plaintext oracle"). The attacker holds only what that host has: its writer key file and
the repository's storage (a local directory it may read and write). It guesses the content
of a small secret file another writer backed up, computes each guess's chunk id under the id
key it holds, and looks for the ids among the stored blobs. It cannot list them: pack
trailers and index files are sealed for their writer and the recovery side, so
the test hands it every stored blob id (read with the recovery key), more than it has. With
per-writer id keys there is still nothing to find: the defender's writer put its blobs under
its own id key. The same guess under the
defender's own key does find the file, so the probe itself works. The price, stated by a
test too: the attacker's writer storing the same bytes does not deduplicate against them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lifeboat.crypto.keys import BackupKey, load_backup_key
from lifeboat.errors import IntegrityError
from lifeboat.repo import Repository
from lifeboat.repo.keyring import Keyring
from lifeboat.storage import open_storage
from tests.harness import Clock, LifeboatCli, PolicyBuilder
from tests.harness.packs import stored_blob_table

PIN = b"481516\n"  # the secret: a 6-digit PIN file on the defender's host


@dataclass
class Site(LifeboatCli):
    """The defender: host A backs up `app` (with the PIN), host B may write `web`."""

    root: Path = field(default=Path("."))

    @property
    def recovery(self) -> list[str]:
        return ["--recovery-key", str(self.root / "recovery.key")]

    def restored(self, asset: str, name: str) -> bytes:
        target = self.root / f"restored-{asset}-{len(os.listdir(self.root))}"
        self.run("restore", asset, "--target", str(target), *self.recovery)
        return (target / asset / name).read_bytes()


@pytest.fixture
def site(tmp_path: Path, clock: Clock) -> Site:
    for asset in ("app", "web"):
        (tmp_path / asset).mkdir()
        (tmp_path / asset / "readme.txt").write_bytes(f"{asset} settings\n".encode())
    (tmp_path / "app" / "pin.txt").write_bytes(PIN)
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 3})
        .files("app", [tmp_path / "app"])
        .files("web", [tmp_path / "web"])
        .write(tmp_path / "lifeboat.toml")
    )
    s = Site(policy=policy, clock=clock, root=tmp_path)
    s.env["LIFEBOAT_ACTOR"] = "test"
    s.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    s.json("backup", "app")
    out = tmp_path / "host-b" / "writer.key"
    s.json("keys", "add-writer", "host-b", "--assets", "web", "--out", str(out), *s.recovery)
    return s


def host_b_key(site: Site) -> BackupKey:
    return load_backup_key(site.root / "host-b" / "writer.key")


def stored_blob_ids(root: Path) -> set[str]:
    """Every blob id in storage, read with the recovery key (see the module's docstring)."""
    return {blob[1] for blob in stored_blob_table(f"file://{root / 'repo'}", root / "recovery.key")}


def probe(key: BackupKey, root: Path) -> list[bytes]:
    """The attack: every 6-digit PIN file, its chunk id under ``key``, looked up among the
    stored blob ids. Returns the guesses found."""
    listed = stored_blob_ids(root)
    assert len(listed) > 0
    blob_id = Keyring.for_backup(key).blob_id
    return [guess for n in range(10**6) if blob_id(guess := b"%06d\n" % n) in listed]


def test_a_backup_host_cannot_read_which_blobs_a_pack_holds(site: Site) -> None:
    attacker = Repository.open(open_storage(f"file://{site.root / 'repo'}"), backup_key=host_b_key(site))
    packs = attacker.storage.list("data/")
    assert packs
    for obj in packs:
        with pytest.raises(IntegrityError, match="does not open with this key"):
            attacker.pack_table(attacker.storage.get(obj.name))


def test_another_writers_key_cannot_find_a_small_file_by_its_chunk_id(site: Site) -> None:
    assert probe(host_b_key(site), site.root) == []
    # the same brute force with host A's own key finds the PIN: the probe is sound, and
    # host A holds that data in plaintext anyway
    defender = load_backup_key(site.root / "keys" / "backup.key")
    assert probe(defender, site.root) == [PIN]


def test_the_cost_the_same_bytes_from_two_writers_are_stored_twice(site: Site) -> None:
    (site.root / "web" / "pin.txt").write_bytes(PIN)
    attacker = Repository.open(open_storage(f"file://{site.root / 'repo'}"), backup_key=host_b_key(site))
    with attacker.backup("web", "files") as session:
        session.add_bytes("web/pin.txt", PIN)
        stats = session.commit().stats
    assert stats.new_chunks >= 1 and stats.new_bytes >= len(PIN)  # nothing reused from host A
    defender = load_backup_key(site.root / "keys" / "backup.key")
    index = stored_blob_ids(site.root)
    ids = {Keyring.for_backup(k).blob_id(PIN) for k in (defender, host_b_key(site))}
    assert len(ids) == 2 and all(i in index for i in ids)
    # and the recovery side reads both writers' copies (host B's id key from the registry)
    assert site.restored("app", "pin.txt") == PIN == site.restored("web", "pin.txt")
