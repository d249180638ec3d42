"""`lifeboat policy check`: valid files pass, every kind of mistake is one line, exit 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.harness import LifeboatCli

VALID = """
[repository]
url = "file:///var/lib/lifeboat/repo"
keyfile = "backup.key"

[deployment]
mode = "production"

[classes.critical]
rpo = "5m"
rto = "30m"
retention = { daily = 7, weekly = 4, monthly = 12, min_days = 35 }

[classes.standard]
rpo = "1d"
rto = "4h"

[assets.maindb]
kind = "postgres"
class = "critical"
dsn = "host=/var/run/postgresql port=5432"
schedule = "0 2 * * *"
window = "22:00-04:00"

[assets.media]
kind = "objects"
class = "standard"
source = "s3://media"
schedule = "0 3 * * *"

[assets.config]
kind = "files"
class = "standard"
paths = ["/etc"]
schedule = "0 */6 * * *"

[escrow]
threshold = 2
custodians = ["alice", "bob", "carol"]
"""


CROSS_CHECK = """[drills.outage]
scenario = "full-outage"
[[drills.outage.cross_checks]]
database = "{db}"
objects = "{objects}"
query = "select key from media"

[escrow]"""
NOT_A_DATABASE = CROSS_CHECK.format(db="media", objects="media")
NOT_OBJECTS = CROSS_CHECK.format(db="maindb", objects="config")


def run(policy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return LifeboatCli(policy, timeout=60).run("policy", "check", "--offline", *args, check=False)


def test_valid_policy_reports_every_asset(tmp_path):
    policy = tmp_path / "lifeboat.toml"
    policy.write_text(VALID)
    proc = run(policy, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {a["asset"] for a in out["assets"]} == {"maindb", "media", "config"}
    maindb = next(a for a in out["assets"] if a["asset"] == "maindb")
    assert maindb["rpo"] == "5m" and maindb["min_days"] == 35 and out["escrow_threshold"] == 2


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('kind = "objects"', 'kind = "object"', "assets.media: unknown kind 'object'"),
        ('rpo = "5m"', 'rpo = "5 minutes"', "classes.critical.rpo: bad duration"),
        ('window = "22:00-04:00"', 'window = "late"', "assets.maindb.window: bad window"),
        ('class = "critical"\ndsn', 'class = "gold"\ndsn', "assets.maindb.class: unknown class 'gold'"),
        ("threshold = 2", "threshold = 4", "escrow.threshold: 4 shares needed but only 3 custodians"),
        ('schedule = "0 2 * * *"', 'schedule = "every night"', "assets.maindb.schedule: bad cron"),
        ("[escrow]", "[escrow]\ncolour = 1", "escrow.colour: unknown key"),
        ('url = "file:', "url = file:", "invalid TOML"),
        # each asset is checked by its kind's own model (assets/<kind>/model.py)
        ('kind = "objects"\n', "", "assets.media: missing 'kind' (one of: files, postgres, objects, keys)"),
        ('source = "s3://media"', 'source = "s3://media"\nsorce = "x"', "assets.media.sorce: unknown key"),
        ('source = "s3://media"', 'source = "media"', "assets.media.source: bad source 'media'"),
        ("[escrow]", NOT_A_DATABASE, "cross_checks.0.database: 'media' is not a postgres asset"),
        ("[escrow]", NOT_OBJECTS, "cross_checks.0.objects: 'config' is not an objects asset"),
    ],
)
def test_invalid_policy_is_one_line_naming_file_and_key(tmp_path, old, new, expected):
    policy = tmp_path / "lifeboat.toml"
    assert old in VALID
    policy.write_text(VALID.replace(old, new, 1))
    proc = run(policy)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert str(policy) in lines[0] and expected in lines[0], lines[0]


def test_missing_policy_file(tmp_path):
    proc = run(tmp_path / "nope.toml")
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_schedule_slower_than_rpo_is_reported(tmp_path):
    policy = tmp_path / "lifeboat.toml"
    policy.write_text(VALID.replace('schedule = "0 */6 * * *"', 'schedule = "0 0 * * 0"'))
    out = json.loads(run(policy, "--json").stdout)
    assert any(f["asset"] == "config" and f["level"] == "error" for f in out["findings"])


def test_policy_check_says_a_filesystem_repository_is_not_immutable_in_production(tmp_path):

    (tmp_path / "data").mkdir()
    policy = tmp_path / "lifeboat.toml"
    body = """
[repository]
url = "file://{root}/repo"

[deployment]
mode = "{mode}"

[classes.standard]
rpo = "1d"
rto = "1h"

[assets.config]
kind = "files"
class = "standard"
paths = ["{root}/data"]
schedule = "0 2 * * *"
"""
    for mode, warned in (("production", True), ("development", False)):
        policy.write_text(body.format(root=tmp_path, mode=mode))
        proc = run(policy)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert ("not immutable" in proc.stdout) is warned, proc.stdout
