"""A writer key revoked (or rotated away) while a recovery-side handle still holds it: what
it signs afterwards (prune's index files, audit copies) would be refused by every reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.attacks.test_forged_history import GENUINE, Site, make_site
from tests.harness import Clock


@pytest.fixture
def site(tmp_path: Path, clock: Clock) -> Site:
    return make_site(tmp_path, clock)


def test_audit_verify_is_clean_after_a_writer_rotation(site: Site) -> None:
    site.backup("app")
    site.json("keys", "rotate", *site.recovery)
    site.backup("app")
    proc = site.run("audit", "verify", *site.recovery, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_audit_verify_is_clean_after_revoking_the_policys_own_writer(site: Site) -> None:
    site.backup("app")
    [name] = [w["name"] for w in site.json("keys", "writers")]
    site.json("keys", "revoke-writer", name, *site.recovery)
    proc = site.run("audit", "verify", *site.recovery, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prune_with_a_revoked_key_file_in_the_policy_keeps_everything_restorable(site: Site) -> None:
    site.env["LIFEBOAT_INDEX_FILES_MAX"] = "1"  # backups merge index files: packs of both assets in one
    site.backup("app")
    site.backup("web")
    (site.root / "app" / "config.txt").write_bytes(b"second version\n")
    site.backup("app")
    [name] = [w["name"] for w in site.json("keys", "writers")]
    site.json("keys", "revoke-writer", name, *site.recovery)  # the host is suspected; file stays
    site.run("forget", *site.recovery, check=False)
    site.run("prune", *site.recovery)
    assert site.restored("web", "config.txt") == GENUINE
    assert site.restored("app", "config.txt") == b"second version\n"
