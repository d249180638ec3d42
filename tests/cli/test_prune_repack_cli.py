"""`prune --repack-small / --max-unused`: small packs merged, every snapshot still restores."""

from __future__ import annotations

import json

from tests.cli.conftest import Cli
from tests.cli.test_prune_cli import repository_objects


def test_prune_repack_small_merges_packs_and_restores_stay_exact(cli: Cli):
    key = str(cli.root / "recovery.key")
    for version in range(3):
        (cli.source / "app.conf").write_text(f"version = {version}\n" * 2000)
        cli.run("backup", "config")
    packs_before = [n for n in repository_objects(cli) if n.startswith("data/")]
    dry = json.loads(cli.run("prune", "--recovery-key", key, "--json", "--repack-small", "--dry-run").stdout)
    assert dry["packs_repacked"] == len(packs_before)
    assert [n for n in repository_objects(cli) if n.startswith("data/")] == packs_before
    report = json.loads(cli.run("prune", "--recovery-key", key, "--json", "--repack-small").stdout)
    assert report["packs_repacked"] == len(packs_before) >= 6
    packs_after = [n for n in repository_objects(cli) if n.startswith("data/")]
    assert len(packs_after) == 1 and packs_after[0] not in packs_before
    cli.run("check", "--read-data", "--recovery-key", key)
    out = cli.root / "restored"
    cli.run("restore", "config", "--target", str(out), "--recovery-key", key)
    (restored,) = out.rglob("app.conf")
    assert restored.read_text() == "version = 2\n" * 2000


def test_prune_refuses_a_bad_max_unused_in_one_line(cli: Cli):
    proc = cli.run(
        "prune", "--recovery-key", str(cli.root / "recovery.key"), "--max-unused", "lots", check=False
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("lifeboat: error: --max-unused 'lots'")
