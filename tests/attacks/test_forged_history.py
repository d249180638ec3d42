"""A compromised backup host forging history (issue #14). The attacker holds only what that
host has: its writer key file and the repository's storage (here a local directory it may
write). It writes through the repository API with its own key, or plants raw objects. The
defender's side is the real `lifeboat` executable: every forged snapshot is refused (never
listed, never "latest", never counted by forget) and `check` and `status` report it, naming
the writer and the reason, with exit 1."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lifeboat import clock
from lifeboat.crypto.keys import load_backup_key
from lifeboat.errors import KeyError_
from lifeboat.repo import Repository
from lifeboat.repo.backup import BackupSession
from lifeboat.repo.format import snapshot_name
from lifeboat.repo.keyring import Keyring
from lifeboat.repo.model import SnapshotInfo, SnapshotStats
from lifeboat.repo.sealed import MetadataCodec
from lifeboat.repo.snapshots import encode_snapshot
from lifeboat.storage import open_storage
from tests.harness import Clock, LifeboatCli, PolicyBuilder

GENUINE = b"the genuine configuration\n"
EVIL = b"the attacker's configuration\n"
DAY = 86400


@dataclass
class Site(LifeboatCli):
    """The defender: a policy with two assets (app, web) and the recovery key."""

    root: Path = field(default=Path("."))

    @property
    def recovery(self) -> list[str]:
        return ["--recovery-key", str(self.root / "recovery.key")]

    def backup(self, asset: str) -> str:
        return str(self.json("backup", asset)[0]["snapshot"])

    def snapshot_ids(self, asset: str | None = None) -> list[str]:
        """Every writer's accepted snapshots: the recovery side opens all sealed headers
        (with the backup key, `snapshots` lists only its own writer's)."""
        extra = ["--asset", asset] if asset else []
        return [s["id"] for s in self.json("snapshots", *extra, *self.recovery)]

    def restored(self, asset: str, name: str) -> bytes:
        target = self.root / f"restored-{asset}-{len(os.listdir(self.root))}"
        self.run("restore", asset, "--target", str(target), *self.recovery)
        return (target / asset / name).read_bytes()

    def check_problems(self) -> list[dict[str, object]]:
        proc = self.run("check", "--json", *self.recovery, check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        return list(json.loads(proc.stdout)["problems"])

    def check_problems_read_data(self) -> list[dict[str, object]]:
        proc = self.run("check", "--read-data", "--json", *self.recovery, check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        return list(json.loads(proc.stdout)["problems"])

    def status_breaches(self) -> list[str]:
        proc = self.run("status", "--json", check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        return [b for a in json.loads(proc.stdout)["assets"] for b in a["breaches"]]

    def issue_writer(self, name: str, assets: str) -> Path:
        """The key file a second backup host gets (`keys add-writer`)."""
        out = self.root / "host2" / "writer.key"
        issued = self.json("keys", "add-writer", name, "--assets", assets, "--out", str(out), *self.recovery)
        assert issued["writer"] == name and issued["assets"] == assets.split(",")
        assert out.stat().st_mode & 0o777 == 0o600
        return out


@pytest.fixture
def site(tmp_path: Path, clock: Clock) -> Site:
    return make_site(tmp_path, clock)


def make_site(tmp_path: Path, clock: Clock) -> Site:
    """Two assets, an initialised repository and its recovery key (also used by
    test_revoked_writer.py)."""
    for asset in ("app", "web"):
        (tmp_path / asset).mkdir()
        (tmp_path / asset / "config.txt").write_bytes(GENUINE)
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 1})
        .files("app", [tmp_path / "app"])
        .files("web", [tmp_path / "web"])
        .write(tmp_path / "lifeboat.toml")
    )
    s = Site(policy=policy, clock=clock, root=tmp_path)
    s.env["LIFEBOAT_ACTOR"] = "test"
    s.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    return s


def attacker(site: Site, keyfile: Path) -> Repository:
    """The compromised host's handle: its own key file and the storage, nothing else."""
    return Repository.open(open_storage(f"file://{site.root / 'repo'}"), backup_key=load_backup_key(keyfile))


def forge(repo: Repository, asset: str, content: bytes = EVIL) -> str:
    """A backup the attacker's own code commits: `Repository.backup` refuses an asset its
    writer may not write, so it builds the session itself (it may run any code)."""
    with BackupSession(repo, asset=asset, kind="files", use_parent_cache=False) as session:
        session.add_bytes(f"{asset}/config.txt", content)
        return session.commit().id


def refusals(problems: list[dict[str, object]], snapshot_id: str) -> list[str]:
    return [
        str(p["message"])
        for p in problems
        if p["kind"] == "refused-snapshot" and p["object"] == snapshot_name(snapshot_id)
    ]


def test_a_writer_cannot_forge_a_snapshot_of_another_writers_asset(site: Site) -> None:
    genuine = site.backup("app")
    repo = attacker(site, site.issue_writer("web-1", "web"))
    own = forge(repo, "web", b"web's own data\n")  # its own asset: accepted
    with pytest.raises(KeyError_, match="writer web-1 cannot back up app: writer may not write this asset"):
        repo.backup("app", "files")  # the honest client refuses at once
    forged = forge(repo, "app")

    assert site.snapshot_ids("app") == [genuine]
    assert own in site.snapshot_ids("web")
    listed = site.run("snapshots", *site.recovery).stdout
    assert f"refused snapshot {forged[:12]} of app" in listed and "web-1" in listed
    # this host's own key cannot open web-1's sealed headers: it counts its own-asset one and
    # refuses the other, whose signature names an asset outside web-1's scope
    own_view = site.run("snapshots").stdout
    assert "1 snapshot(s) by other writers (web-1) are sealed" in own_view
    assert f"sealed snapshot {forged[:12]} of app by web-1 refused: writer may not write" in own_view
    assert site.restored("app", "config.txt") == GENUINE  # "latest" is the genuine one
    target = str(site.root / "by-id")
    asked = site.run("restore", "app", "--snapshot", forged, "--target", target, *site.recovery, check=False)
    assert asked.returncode != 0 and asked.stderr.startswith("lifeboat: error: snapshot ")
    assert "web-1" in asked.stderr and "may not write this asset" in asked.stderr
    assert not Path(target).exists() or not any(Path(target).iterdir())
    [message] = refusals(site.check_problems(), forged)
    assert "web-1" in message and "writer may not write this asset" in message
    assert any("web-1" in b and forged[:12] in b for b in site.status_breaches())


def test_a_future_dated_snapshot_is_never_latest_and_forget_keeps_the_genuine_one(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = attacker(site, site.issue_writer("web-1", "web"))
    older = site.backup("web")
    genuine = site.backup("web")
    # The compromised host sets its own clock: a month of "newer" monthly snapshots.
    future = []
    for days in (31, 62, 93):
        monkeypatch.setenv("LIFEBOAT_CLOCK_OFFSET", str(days * DAY))
        future.append(forge(repo, "web"))
    monkeypatch.delenv("LIFEBOAT_CLOCK_OFFSET")

    assert site.snapshot_ids("web") == [older, genuine]
    assert site.restored("web", "config.txt") == GENUINE
    forgot = site.json("forget", *site.recovery)
    assert forgot["removed"] == [older] and genuine in forgot["kept"]
    assert not set(future) & set(forgot["kept"] + forgot["removed"])  # counted by no bucket
    assert site.snapshot_ids("web") == [genuine]
    problems = site.check_problems()
    for forged in future:
        [message] = refusals(problems, forged)
        assert "web-1" in message and "dated in the future" in message
    # `status` here runs with this host's writer key, which cannot open web-1's sealed
    # headers (`check` with the recovery key judged them above): none of them is "latest"
    proc = site.run("status", "--json", check=False)
    web = next(a for a in json.loads(proc.stdout)["assets"] if a["asset"] == "web")
    assert web["exposure_s"] >= 0 and "Traceback" not in proc.stderr


def test_a_revoked_writers_new_backup_is_refused(site: Site) -> None:
    keyfile = site.issue_writer("web-1", "web")
    before = forge(attacker(site, keyfile), "web", b"before the revocation\n")
    assert before in site.snapshot_ids("web")
    revoked = site.json("keys", "revoke-writer", "web-1", *site.recovery)
    assert revoked["writer"] == "web-1" and revoked["generation"] == 1

    after = forge(attacker(site, keyfile), "web")
    assert site.snapshot_ids("web") == [before]  # what it signed before stays trusted
    [message] = refusals(site.check_problems(), after)
    assert "web-1" in message and "writer revoked" in message
    writers = {(w["name"], w["revoked"] is not None) for w in site.json("keys", "writers")}
    assert ("web-1", True) in writers


def test_a_planted_unsigned_snapshot_is_refused(site: Site) -> None:
    genuine = site.backup("app")
    keyfile = site.issue_writer("web-1", "web")
    key = load_backup_key(keyfile)
    storage = open_storage(f"file://{site.root / 'repo'}")
    # A header with a valid MAC (the key file holds the MAC key) and no signature, dated now:
    # the forgery the old format accepted (the genuine tree's ids are sealed to this host).
    planted = SnapshotInfo("", "app", "files", clock.now(), "evil", {}, SnapshotStats(), ["0" * 64], "x")
    unsigned = MetadataCodec(
        key.repo_id,
        Keyring.for_backup(key).mac,
        signing=None,
        recovery_public=key.recovery_public,
        seal=False,
    )
    planted_id, data = encode_snapshot(planted, unsigned)
    storage.put(snapshot_name(planted_id), data)

    assert site.snapshot_ids("app") == [genuine]
    [message] = refusals(site.check_problems(), planted_id)
    assert "unsigned" in message and "unknown writer" in message
    assert any(planted_id[:12] in b and "unsigned" in b for b in site.status_breaches())


def test_revoking_from_the_suspected_compromise_refuses_what_was_signed_since(site: Site) -> None:
    keyfile = site.issue_writer("web-1", "web")
    genuine = site.backup("web")  # the first writer, untouched by web-1's compromise
    trusted = forge(attacker(site, keyfile), "web", b"written after the unnoticed compromise\n")
    times = {s["id"]: s["time"] for s in site.json("snapshots", "--asset", "web", *site.recovery)}
    assert set(times) == {genuine, trusted}

    # Noticed later: web-1 is revoked from the moment it was compromised, so what it signed
    # since (accepted until now) is refused too.
    site.json("keys", "revoke-writer", "web-1", "--since", times[trusted], *site.recovery)
    assert site.snapshot_ids("web") == [genuine]
    [message] = refusals(site.check_problems(), trusted)
    assert "web-1" in message and "writer revoked" in message
    audit = [json.loads(line) for line in (site.root / ".lifeboat" / "audit.jsonl").read_text().splitlines()]
    ops = [(e["operation"], e["details"].get("writer")) for e in audit if e["operation"].startswith("keys-")]
    assert ops == [("keys-add-writer", "web-1"), ("keys-revoke-writer", "web-1")]


def test_a_header_copy_planted_beside_the_headers_is_reported_and_never_chosen(site: Site) -> None:
    """With the storage alone, the attacker copies the newest header under snapshots/x/,
    once exactly and once with its signature broken. Backups and restores go on choosing
    the genuine header (the broken copy made every choice of the asset fail), a lookup by
    id is not made ambiguous, and `check` and `snapshots` report the planted names."""
    site.backup("app")
    (site.root / "app" / "config.txt").write_bytes(b"the second genuine configuration\n")
    newest = site.backup("app")
    site.snapshot_ids("app")  # the host's cache summary, every later choice is made from
    headers = site.root / "repo" / "snapshots"
    (headers / "x").mkdir()
    (headers / "x" / newest).write_bytes((headers / newest).read_bytes())
    broken = bytearray((headers / newest).read_bytes())
    broken[-1] ^= 1
    (headers / "y").mkdir()
    (headers / "y" / newest).write_bytes(bytes(broken))

    assert site.restored("app", "config.txt") == b"the second genuine configuration\n"
    assert site.json("backup", "app")[0]["ok"] is True
    target = site.root / "by-id"
    site.run("restore", "app", "--snapshot", newest[:12], "--target", str(target), *site.recovery)
    assert (target / "app" / "config.txt").read_bytes() == b"the second genuine configuration\n"
    planted = {f"snapshots/x/{newest}", f"snapshots/y/{newest}"}
    problems = site.check_problems()
    assert {str(p["object"]) for p in problems} >= planted
    messages = [str(p["message"]) for p in problems if p["object"] in planted]
    assert len(messages) == 2 and all("not where a snapshot header is stored" in m for m in messages)
    listed = site.run("snapshots", *site.recovery, check=False)
    assert listed.returncode == 1 and all(name in listed.stdout + listed.stderr for name in planted)
