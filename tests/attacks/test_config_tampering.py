"""The repository config is plaintext in storage: a compromised backup host with storage
credentials rewrites its trust settings (root key, clock skew). Readers must not follow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.attacks.test_forged_history import DAY, EVIL, GENUINE, Site, attacker, forge, make_site
from tests.harness import Clock


@pytest.fixture
def site(tmp_path: Path, clock: Clock) -> Site:
    return make_site(tmp_path, clock)


def rewrite_config(site: Site, **changes: object) -> None:
    path = site.root / "repo" / "config"
    config = json.loads(path.read_bytes())
    config.update(changes)
    path.chmod(0o644)
    path.unlink()
    path.write_text(json.dumps(config))


def test_a_config_rewritten_with_a_huge_skew_does_not_let_a_future_snapshot_win(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = attacker(site, site.issue_writer("web-1", "web"))
    site.backup("web")
    monkeypatch.setenv("LIFEBOAT_CLOCK_OFFSET", str(365 * DAY))
    forged = forge(repo, "web")
    monkeypatch.delenv("LIFEBOAT_CLOCK_OFFSET")
    rewrite_config(site, clock_skew_s=10 * 365 * DAY)  # the storage credentials allow it
    assert forged not in site.snapshot_ids("web")
    assert site.restored("web", "config.txt") == GENUINE


def test_a_config_with_another_root_key_is_refused_by_the_recovery_side(site: Site) -> None:
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from lifeboat.crypto.writers import raw_public

    site.backup("app")
    evil_root = raw_public(Ed25519PrivateKey.generate())
    rewrite_config(site, root_public=base64.b64encode(evil_root).decode())
    proc = site.run("snapshots", *site.recovery, check=False)
    assert proc.returncode != 0 and "root" in proc.stderr, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_config_rewritten_with_a_negative_skew_does_not_make_prune_delete_genuine_data(site: Site) -> None:
    site.backup("app")
    original = (site.root / "repo" / "config").read_bytes()
    rewrite_config(site, clock_skew_s=-10 * 365 * DAY)  # every genuine snapshot "in the future"
    site.run("prune", *site.recovery, check=False)
    (site.root / "repo" / "config").unlink()
    (site.root / "repo" / "config").write_bytes(original)  # the defender puts it back
    assert site.restored("app", "config.txt") == GENUINE


def test_a_config_and_registry_replaced_under_another_root_is_refused_on_a_fresh_host(site: Site) -> None:
    import base64
    import shutil

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from lifeboat.crypto.keys import load_backup_key
    from lifeboat.crypto.writers import ANY_ASSET, RootKey, issue_writer
    from lifeboat.repo.trust import as_backup_key

    site.backup("app")
    stolen = load_backup_key(site.root / "keys" / "backup.key")
    config = json.loads((site.root / "repo" / "config").read_bytes())
    root = RootKey(stolen.repo_id, stolen.recovery_public, Ed25519PrivateKey.generate())
    writer, version = issue_writer(root, "evil", [ANY_ASSET])
    shutil.rmtree(site.root / "repo" / "records" / "registry")
    (site.root / "repo" / "records" / "registry").mkdir()
    (site.root / "repo" / "records" / "registry" / "00000001").write_bytes(version.to_bytes())
    rewrite_config(site, root_public=base64.b64encode(root.public).decode())
    assert config["root_public"] != base64.b64encode(root.public).decode()
    forge(attacker_with(site, as_backup_key(stolen, writer)), "app")
    for checkpoint in site.root.rglob("registry-checkpoint.json"):
        checkpoint.unlink()  # the disaster-recovery host: a fresh state directory
    proc = site.run("restore", "app", "--target", str(site.root / "out"), *site.recovery, check=False)
    assert proc.returncode != 0 and "root key" in proc.stderr, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (site.root / "out" / "app" / "config.txt").exists() or (
        (site.root / "out" / "app" / "config.txt").read_bytes() != EVIL
    )


def attacker_with(site: Site, key: object):  # type: ignore[no-untyped-def]
    from lifeboat.repo import Repository
    from lifeboat.storage import open_storage

    return Repository.open(open_storage(f"file://{site.root / 'repo'}"), backup_key=key)  # type: ignore[arg-type]
