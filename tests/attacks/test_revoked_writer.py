"""A backup host whose key was rotated away (issue #14): the attacker kept a copy of the old
key file and the storage credentials. `keys rotate` issued the next generation with new
secrets and revoked the old one in the root-signed registry, so whatever the old key signs
afterwards, through the honest client or its own code, and however its key file is edited,
is refused by every reader and reported by `check` and `status`, naming the writer."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from lifeboat.crypto.keys import load_backup_key
from tests.attacks.test_forged_history import GENUINE, Site, attacker, forge, make_site, refusals
from tests.harness import Clock, LifeboatCli, PolicyBuilder


@pytest.fixture
def site(tmp_path: Path, clock: Clock) -> Site:
    return make_site(tmp_path, clock)


def steal(site: Site) -> Path:
    """The attacker's copy of the current key file, taken before the rotation."""
    copy = site.root / "attacker" / "stolen.key"
    copy.parent.mkdir(exist_ok=True)
    shutil.copy2(site.root / "keys" / "backup.key", copy)
    return copy


def edited(site: Site, stolen: Path, label: str, **writer: object) -> Path:
    """The stolen key file with ids edited (the issue's reproduction edited the key id)."""
    data = json.loads(stolen.read_text())
    data["key_id"] = "0123456789abcdef"
    data["writer"].update(writer)
    out = stolen.with_name(f"edited-{label}.key")
    out.write_text(json.dumps(data))
    return out


def old_key_host(site: Site, keyfile: Path) -> LifeboatCli:
    """The honest client on the compromised host, configured with the old key file."""
    policy = (
        PolicyBuilder()
        .repository(f"file://{site.root / 'repo'}", keyfile=keyfile)
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 1})
        .files("app", [site.root / "app"])
        .files("web", [site.root / "web"])
        .state(site.root / "attacker" / "state")
        .write(site.root / "attacker" / "lifeboat.toml")
    )
    return LifeboatCli(policy=policy, clock=site.clock, cwd=site.root / "attacker")


def test_a_backup_with_the_rotated_away_key_is_refused_by_every_reader(site: Site) -> None:
    before = site.backup("app")
    stolen = steal(site)
    old_public = load_backup_key(stolen).signing
    rotated = site.json("keys", "rotate", *site.recovery)
    writer = rotated["writer"]
    assert rotated["old_generation"] == 1 and rotated["new_generation"] == 2 and rotated["revoked_at"]
    new = load_backup_key(site.root / "keys" / "backup.key")
    assert new.signing is not None and old_public is not None
    assert new.signing.private_bytes_raw() != old_public.private_bytes_raw()  # new secrets
    assert new.key_id != rotated["old_key_id"] and new.generation == 2

    # the honest client with the old key (edited or not) refuses at once, one line each
    for keyfile in (stolen, edited(site, stolen, "id")):
        proc = old_key_host(site, keyfile).run("backup", "app", check=False)
        assert proc.returncode != 0 and f"writer {writer} cannot back up app: writer revoked" in proc.stderr
        assert "hint: this key was rotated or revoked: use the writer's newest key file" in proc.stderr
        assert proc.stderr.startswith("lifeboat: error: ") and "Traceback" not in proc.stderr

    forged = forge(attacker(site, edited(site, stolen, "forge")), "app")  # its own code
    after = site.backup("app")  # the rotated key writes as before

    assert site.snapshot_ids("app") == [before, after]
    listed = site.run("snapshots").stdout
    # the rotated host opens its earlier generation's headers, the forged one too, and
    # refuses it by the registry, naming its date and writer (repo/snapshots.py)
    [line] = [line for line in listed.splitlines() if forged[:12] in line]
    assert line.startswith(f"refused snapshot {forged[:12]} of app dated ")
    assert line.endswith(f" by {writer} refused: writer revoked")
    assert site.restored("app", "config.txt") == GENUINE
    target = site.root / "by-id"
    asked = site.run(
        "restore", "app", "--snapshot", forged, "--target", str(target), *site.recovery, check=False
    )
    assert asked.returncode != 0 and "writer revoked" in asked.stderr and writer in asked.stderr
    assert not target.exists() or not any(target.iterdir())
    forgot = site.json("forget", *site.recovery)
    assert forged not in forgot["kept"] + forgot["removed"]
    [message] = refusals(site.check_problems(), forged)
    assert writer in message and "writer revoked" in message
    assert any(writer in b and forged[:12] in b and "writer revoked" in b for b in site.status_breaches())


def test_editing_the_ids_in_the_old_key_file_does_not_help(site: Site) -> None:
    stolen = steal(site)
    web = site.issue_writer("web-1", "web")
    rotated = site.json("keys", "rotate", *site.recovery)
    writer = rotated["writer"]
    disguises = {
        "key-id": edited(site, stolen, "key-id"),
        "next-generation": edited(site, stolen, "generation", generation=2),
        "another-writer": edited(site, stolen, "name", name="web-1", generation=1),
    }
    forged = {label: forge(attacker(site, path), "web") for label, path in disguises.items()}
    genuine = forge(attacker(site, web), "web")  # web-1's own key still writes

    assert site.snapshot_ids("web") == [genuine]
    problems = site.check_problems()
    for label, snapshot in forged.items():
        [message] = refusals(problems, snapshot)
        # the registry knows the signing key, not the file's ids: the old writer is named
        assert writer in message and "writer revoked" in message, (label, message)


def test_rotating_since_the_compromise_refuses_what_the_old_key_signed_before_the_rotation(
    site: Site,
) -> None:
    genuine = site.backup("web")
    stolen = steal(site)
    unnoticed = forge(attacker(site, stolen), "web", b"written after the unnoticed compromise\n")
    times = {s["id"]: s["time"] for s in site.json("snapshots", "--asset", "web")}
    assert set(times) == {genuine, unnoticed}

    rotated = site.json("keys", "rotate", "--since", times[unnoticed], *site.recovery)
    assert rotated["revoked_at"] <= times[unnoticed]
    assert site.snapshot_ids("web") == [genuine]
    [message] = refusals(site.check_problems(), unnoticed)
    assert rotated["writer"] in message and "writer revoked" in message


def test_rotation_refusals_are_one_line_and_audited_without_secrets(site: Site) -> None:
    stolen = steal(site)
    old = json.loads(stolen.read_text())
    secrets = [old["writer"]["signing_key"], old["id_key"]]
    no_creds = site.run("keys", "rotate", check=False)
    assert no_creds.returncode != 0 and no_creds.stderr.startswith("lifeboat: error: ")
    assert "recovery key" in no_creds.stderr and "Traceback" not in no_creds.stderr
    bad_time = site.run("keys", "rotate", "--since", "yesterday", *site.recovery, check=False)
    assert bad_time.returncode != 0 and "--since 'yesterday' is not an ISO time" in bad_time.stderr
    ahead = site.run("keys", "rotate", "--since", "2999-01-01T00:00:00+00:00", *site.recovery, check=False)
    assert ahead.returncode != 0 and "lies in the future" in ahead.stderr

    rotated = site.json("keys", "rotate", *site.recovery)
    fresh = json.loads((site.root / "keys" / "backup.key").read_text())
    secrets += [fresh["writer"]["signing_key"]]
    # rotating again with the old file: it is not the writer's newest key any more
    shutil.copy2(stolen, site.root / "keys" / "backup.key")
    stale = site.run("keys", "rotate", *site.recovery, check=False)
    assert stale.returncode != 0 and "generation 2 replaced it" in stale.stderr, stale.stderr

    audit_text = (site.root / ".lifeboat" / "audit.jsonl").read_text()
    audit = [json.loads(line) for line in audit_text.splitlines()]
    rotations = [e for e in audit if e["operation"] == "keys-rotate"]
    assert [e["outcome"] for e in rotations] == ["ok", "failed"]
    assert rotations[0]["details"]["writer"] == rotated["writer"]
    assert rotations[0]["details"]["revoked_generation"] == 1 and rotations[0]["details"]["generation"] == 2
    stored = b"".join(p.read_bytes() for p in (site.root / "repo").rglob("*") if p.is_file())
    for secret in secrets:
        raw = base64.b64decode(secret)
        assert secret not in audit_text and secret not in "".join(site.outputs)
        assert raw not in stored and raw.hex() not in audit_text
