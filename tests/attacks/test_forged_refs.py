"""A compromised backup host forging refs (issue #14). The attacker holds only its own writer
key file (allowed the asset ``web``) and the repository's storage (a local directory it may
write). It signs WAL refs of the PostgreSQL asset ``db`` with its own key, or puts the
genuine writer's public key in a trailer it signed itself. The defender's side is the real
`lifeboat` executable: `wal fetch` never hands a forged ref to PostgreSQL, `wal verify` does
not count it, and `check` and `status` report each one, naming the writer, with exit 1."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lifeboat.crypto.keys import load_backup_key
from lifeboat.crypto.signed import ObjectType, Signature
from lifeboat.repo import Repository
from lifeboat.repo.format import ref_name
from lifeboat.repo.keyring import Keyring
from lifeboat.repo.model import RefInfo
from lifeboat.repo.refs import encode_ref
from lifeboat.repo.trust import sign_statement
from lifeboat.storage import open_storage
from tests.harness import Clock, LifeboatCli, PolicyBuilder

NS = "wal/db"
SEGMENTS = [f"0000000100000000000000{n:02X}" for n in range(1, 5)]
FORGED_HISTORY = "00000002.history"


@dataclass
class Site(LifeboatCli):
    """The defender: a PostgreSQL asset ``db`` (archived with `wal push`) and a files asset."""

    root: Path = field(default=Path("."))

    @property
    def recovery(self) -> list[str]:
        return ["--recovery-key", str(self.root / "recovery.key")]

    def fetch(self, name: str) -> bytes | None:
        dest = self.root / "fetched" / name
        dest.parent.mkdir(exist_ok=True)
        proc = self.run("wal", "fetch", name, str(dest), "--asset", "db", *self.recovery, check=False)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
        return dest.read_bytes() if proc.returncode == 0 else None


@pytest.fixture
def site(tmp_path: Path, clock: Clock) -> Site:
    return make_pg_site(tmp_path, clock)


def make_pg_site(tmp_path: Path, clock: Clock) -> Site:
    """An initialised repository with a PostgreSQL asset ``db`` (no server: WAL files are
    pushed by hand) and a files asset ``web`` (also used by test_state_dir_wal.py)."""
    (tmp_path / "web").mkdir()
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 1})
        .postgres("db", dsn=f"host={tmp_path / 'no-server'} port=5999 user=nobody dbname=none")
        .files("web", [tmp_path / "web"])
        .write(tmp_path / "lifeboat.toml")
    )
    s = Site(policy=policy, clock=clock, root=tmp_path)
    s.env["LIFEBOAT_ACTOR"] = "test"
    s.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    return s


def wal_file(site: Site, name: str, content: bytes) -> Path:
    path = site.root / "pg_wal" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return path


def test_refs_forged_with_another_writers_key_are_ignored_and_reported(site: Site) -> None:
    for name in SEGMENTS[:2]:
        site.run("wal", "push", "--asset", "db", str(wal_file(site, name, f"genuine {name}".encode())))
    [genuine_writer] = [w["name"] for w in site.json("keys", "writers") if w["revoked"] is None]
    out = site.root / "host2" / "writer.key"
    site.json("keys", "add-writer", "web-1", "--assets", "web", "--out", str(out), *site.recovery)

    # The compromised web host: its key file and the storage, nothing else.
    key = load_backup_key(out)
    attacker = Repository.open(open_storage(f"file://{site.root / 'repo'}"), backup_key=key)
    attacker.require_writer_for = lambda asset: None  # type: ignore[method-assign]  # its own code skips the client's up-front refusal
    attacker.put_ref(NS, SEGMENTS[2], b"a segment of the attacker's choosing")  # signed by web-1
    attacker.put_ref(NS, FORGED_HISTORY, b"1\t0/3000000\tforged timeline\n", labels={"kind": "history"})
    # A trailer naming the genuine writer's key over a signature made with its own key.
    stored = (site.root / "repo" / ref_name(NS, SEGMENTS[0])).read_bytes()
    genuine_public = Signature.from_bytes(stored[-101:]).public
    info = RefInfo(NS, SEGMENTS[3], 3, "00" * 32, [], attacker.get_ref(NS, SEGMENTS[0]).time)
    body = encode_ref(Keyring.for_backup(key), attacker.metadata, info)
    assert key.signing is not None
    own = sign_statement(key.signing, key.repo_id, ObjectType.WAL, ref_name(NS, SEGMENTS[3]), "db", body)
    claimed = Signature(genuine_public, Signature.from_bytes(own).signature).to_bytes()
    attacker.storage.put(ref_name(NS, SEGMENTS[3]), body + claimed)

    # restore_command: the genuine segments come back, the forged ones are "not archived".
    assert site.fetch(SEGMENTS[0]) == f"genuine {SEGMENTS[0]}".encode()
    assert site.fetch(SEGMENTS[2]) is None and site.fetch(SEGMENTS[3]) is None
    assert site.fetch(FORGED_HISTORY) is None
    verified = site.json("wal", "verify", "--asset", "db")
    assert verified["segments"] == 2 and verified["last"] == SEGMENTS[1] and verified["timelines"] == [1]

    proc = site.run("check", "--json", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    refused = {
        p["object"]: p["message"] for p in json.loads(proc.stdout)["problems"] if p["kind"] == "refused-ref"
    }
    assert set(refused) == {ref_name(NS, n) for n in (SEGMENTS[2], FORGED_HISTORY, SEGMENTS[3])}
    assert "by web-1 refused: writer may not write this asset" in refused[ref_name(NS, SEGMENTS[2])]
    assert "web-1" in refused[ref_name(NS, FORGED_HISTORY)]
    assert (
        f"claiming to be {genuine_writer} refused: signature does not match"
        in refused[ref_name(NS, SEGMENTS[3])]
    )

    proc = site.run("status", "--json", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [db] = [a for a in json.loads(proc.stdout)["assets"] if a["asset"] == "db"]
    assert sum("web-1" in b and "refused" in b for b in db["breaches"]) == 2
    assert any(f"claiming to be {genuine_writer}" in b for b in db["breaches"])
