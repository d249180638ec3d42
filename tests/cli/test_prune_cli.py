"""`prune` with nothing new to do does nothing and succeeds, however often the daemon runs it."""

from __future__ import annotations

import json
import tomllib

from lifeboat.storage import open_storage
from tests.cli.conftest import Cli


def repository_objects(cli: Cli) -> dict[str, int]:
    """Every data and index object of the repository, with its size (audit copies excluded:
    each run adds its own entry by design)."""
    repo = tomllib.loads(cli.policy.read_text())["repository"]
    storage = open_storage(repo["url"], endpoint_url=repo.get("endpoint_url"))
    return {o.name: o.size for prefix in ("data/", "index/", "snapshots/") for o in storage.list(prefix)}


def test_prune_three_times_in_a_row_changes_nothing_after_the_first(cli):
    key = str(cli.root / "recovery.key")
    for version in range(3):  # retention keeps the last 2: the first snapshot's data becomes garbage
        (cli.source / "app.conf").write_text(f"version = {version}\n" * 2000)
        cli.run("backup", "config")
    cli.run("forget", "--recovery-key", key)
    first = json.loads(cli.run("prune", "--recovery-key", key, "--json").stdout)
    assert first["packs_removed"] > 0
    after_first = repository_objects(cli)
    for _ in range(2):
        again = cli.run("prune", "--recovery-key", key, "--json", check=False)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["packs_removed"] == 0
        assert repository_objects(cli) == after_first
    cli.run("check", "--read-data", "--recovery-key", key)
    out = cli.root / "restored"
    cli.run("restore", "config", "--target", str(out), "--recovery-key", key)
    (restored,) = out.rglob("app.conf")
    assert restored.read_text() == "version = 2\n" * 2000


def test_prune_with_a_rotated_away_recovery_key_deletes_nothing(cli):
    """After `keys rotate --recovery`, what backups write is sealed for the new recovery key:
    the old one (a daemon's key file never updated) cannot open it, so it cannot tell which
    blobs it needs, and before it deleted them as unused. Prune stops instead, and the new
    snapshot still restores."""
    old, new = str(cli.root / "recovery.key"), str(cli.root / "recovery-2.key")
    (cli.source / "app.conf").write_text("before the rotation\n" * 2000)
    cli.run("backup", "config")
    cli.run("keys", "rotate", "--recovery", "--recovery-key", old, "--recovery-key-out", new)
    (cli.source / "app.conf").write_text("after the rotation\n" * 2000)
    cli.run("backup", "config")
    before = repository_objects(cli)
    proc = cli.run("prune", "--recovery-key", old, check=False)
    assert proc.returncode != 0 and "prune stopped" in proc.stderr and "Traceback" not in proc.stderr
    assert repository_objects(cli) == before
    out = cli.root / "restored"
    cli.run("restore", "config", "--target", str(out), "--recovery-key", new)
    (restored,) = out.rglob("app.conf")
    assert restored.read_text() == "after the rotation\n" * 2000
    cli.run("prune", "--recovery-key", new)  # the newest key prunes as before
    cli.run("check", "--read-data", "--recovery-key", new)


def test_junk_beside_the_snapshot_headers_does_not_stop_prune(cli):
    """Only an object named as a header (snapshots/ID) that cannot be opened stops prune:
    nested junk or a folder marker some S3 tools create names no snapshot."""
    key = str(cli.root / "recovery.key")
    (cli.source / "app.conf").write_text("v\n" * 2000)
    cli.run("backup", "config")
    repo = tomllib.loads(cli.policy.read_text())["repository"]
    storage = open_storage(repo["url"], endpoint_url=repo.get("endpoint_url"))
    storage.put("snapshots/folder/marker", b"", retain=False)
    proc = cli.run("prune", "--recovery-key", key, check=False)
    assert proc.returncode == 0, proc.stderr
