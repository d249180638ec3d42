"""The first-use papercuts: what a new operator reads must say where values come from and
what to do next."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

POLICY = """
[repository]
url = "file://{root}/repo"
keyfile = "keys/backup.key"

[deployment]
mode = "production"

[classes.std]
rpo = "1d"
rto = "1h"
retention = {{ last = 3 }}

[classes.strict]
rpo = "1d"
rto = "1h"
retention = {{ daily = 14, min_days = 90 }}

[assets.etc]
kind = "files"
class = "std"
paths = ["{root}/etc"]
schedule = "0 1 * * *"

[assets.ledger]
kind = "files"
class = "strict"
paths = ["{root}/etc"]
schedule = "0 2 * * *"
"""


def lifeboat(policy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lifeboat", "--config", str(policy), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def write(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    policy = tmp_path / "lifeboat.toml"
    policy.write_text(POLICY.format(root=tmp_path))
    return policy


def test_policy_check_shows_effective_retention_and_where_each_value_comes_from(tmp_path):
    policy = write(tmp_path)
    proc = lifeboat(policy, "policy", "check", "--offline")
    assert proc.returncode == 0, proc.stderr
    etc = next(line for line in proc.stdout.splitlines() if "│ etc " in line)
    # `{ last = 3 }` silently kept 7 daily, 4 weekly, 12 monthly: now it says so
    assert "last 3 (classes.std); daily 7, weekly 4, monthly 12 (default); min 35d (mode production)" in etc
    report = json.loads(lifeboat(policy, "policy", "check", "--offline", "--json").stdout)
    ledger = next(a for a in report["assets"] if a["asset"] == "ledger")["retention_sources"]
    assert ledger["daily"] == {"value": 14, "from": "classes.strict"}
    assert ledger["monthly"] == {"value": 12, "from": "default"}
    assert ledger["min_days"] == {"value": 90, "from": "classes.strict"}  # stricter than the mode
