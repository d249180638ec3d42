"""A WAL push (a signed ref) by a key no reader would accept is refused at once, as a backup
is: archive_command fails, so PostgreSQL keeps the segment instead of deleting a file that
every restore would then skip (a gap that ends replay short of the archive's end)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lifeboat.errors import KeyError_
from tests.attacks.test_forged_history import Site, attacker, make_site
from tests.harness import Clock

SEGMENT = "000000010000000000000001"


@pytest.fixture
def site(tmp_path: Path, clock: Clock) -> Site:
    return make_site(tmp_path, clock)


def test_a_wal_push_with_a_rotated_away_key_is_refused_at_once(site: Site) -> None:
    old = site.root / "old.key"
    shutil.copy2(site.root / "keys" / "backup.key", old)
    site.json("keys", "rotate", *site.recovery)
    data = json.loads(old.read_text())
    data["key_id"] = "0123456789abcdef"  # past the client-side retired-key check
    old.write_text(json.dumps(data))
    with pytest.raises(KeyError_, match="writer revoked"):
        attacker(site, old).put_ref("wal/app", SEGMENT, b"segment bytes")
    attacker(site, site.root / "keys" / "backup.key").put_ref("wal/app", SEGMENT, b"segment bytes")


def test_a_wal_push_for_an_asset_outside_the_writers_scope_is_refused_at_once(site: Site) -> None:
    web = attacker(site, site.issue_writer("web-1", "web"))
    with pytest.raises(KeyError_, match="may not write this asset"):
        web.put_ref("wal/app", SEGMENT, b"segment bytes")
    web.put_ref("wal/web", SEGMENT, b"segment bytes")
