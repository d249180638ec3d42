"""A host after `keys rotate` (issue #14): its new generation still opens what the earlier
ones sealed, so its history, its status and its next backup's parent survive the rotation,
while no earlier signing key travels into the new key file."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from lifeboat.crypto.keys import load_backup_key
from tests.attacks.test_forged_history import Site, make_site
from tests.harness import Clock
from tests.harness.settle import settle


@pytest.fixture
def site(tmp_path: Path, clock: Clock) -> Site:
    site = make_site(tmp_path, clock)
    for i in range(5):  # a few files whose reuse the next backup can show
        (tmp_path / "app" / f"data-{i}.bin").write_bytes(bytes([i]) * 50_000)
    settle(tmp_path / "app")
    return site


def own_snapshots(site: Site) -> list[str]:
    """What the host itself lists with its backup key (no recovery key)."""
    return [s["id"] for s in site.json("snapshots", "--asset", "app")]


def test_a_rotated_host_keeps_its_history_status_and_parent(site: Site) -> None:
    first = site.backup("app")
    site.backup("web")
    old_seed = load_backup_key(site.root / "keys" / "backup.key").signing_seed
    assert old_seed is not None

    for generation in (2, 3):  # two rotations: the keys of every earlier generation travel
        rotated = site.json("keys", "rotate", *site.recovery)
        assert rotated["new_generation"] == generation
        assert own_snapshots(site)[0] == first
        status = site.run("status", "--json")  # exit 0: not "never backed up"
        assert all(a["last_backup"] and not a["breaches"] for a in json.loads(status.stdout)["assets"])

    keyfile = site.root / "keys" / "backup.key"
    text = keyfile.read_text()
    assert base64.b64encode(old_seed).decode() not in text  # opening keys only, never a signing key
    assert len(json.loads(text)["writer"]["earlier"]) == 2

    after = site.json("backup", "app")[0]
    assert after["stats"]["reused_files"] == 6  # the parent sealed two generations ago opened
    assert own_snapshots(site) == [first, after["snapshot"]]
    assert site.snapshot_ids("app") == [first, after["snapshot"]]  # the recovery side agrees
    assert site.restored("app", "data-4.bin") == bytes([4]) * 50_000


def test_a_damaged_earlier_key_is_a_one_line_error(site: Site) -> None:
    site.backup("app")
    site.json("keys", "rotate", *site.recovery)
    keyfile = site.root / "keys" / "backup.key"
    data = json.loads(keyfile.read_text())
    data["writer"]["earlier"][0]["metadata_key"] = base64.b64encode(b"short").decode()
    keyfile.write_text(json.dumps(data))
    proc = site.run("snapshots", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("lifeboat: error: backup key file ")
    assert "is damaged" in proc.stderr and "Traceback" not in proc.stderr
