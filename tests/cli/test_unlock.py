"""`lifeboat unlock`: stale locks (by storage time) go, live ones stay unless --all; audited."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lifeboat.repo.locks import STALE_AFTER
from tests.cli.conftest import cli_for, write_policy
from tests.repo.test_locks import DAY, plant_lock


def test_unlock_stale_then_all_is_audited_and_frees_the_repository(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a").write_text("a")
    policy = write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}")
    cli = cli_for(policy, tmp_path, source)
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    now = time.time()
    stale = plant_lock(tmp_path / "repo", body_time=now + 10 * DAY, stored=now - STALE_AFTER - 120)
    live = plant_lock(tmp_path / "repo", body_time=now, stored=now)
    both = cli.run("unlock", "--stale", "--all", check=False)
    assert both.returncode == 2 and both.stderr.startswith("lifeboat: error: ")
    out = cli.run("unlock", "--stale").stdout
    assert f"removed {stale}" in out and f"kept live {live}" in out and "1 lock(s) removed" in out
    assert not (tmp_path / "repo" / stale).exists() and (tmp_path / "repo" / live).exists()
    cli.run("unlock", "--all")
    assert not (tmp_path / "repo" / live).exists()
    cli.run("backup", "config", timeout=60)
    entries = json.loads(cli.run("audit", "show", "--json").stdout)
    unlocks = [e for e in entries if e["operation"] == "unlock"]
    assert len(unlocks) == 2 and stale in json.dumps(unlocks[0]) and live in json.dumps(unlocks[1])
