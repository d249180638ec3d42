"""`status` breaches an asset nobody has shown to come back within its class's
``drill_every``: a last drill older than that (and an hour's grace), or, never drilled, a
backup held for longer. The clock is moved, never waited on."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import LifeboatCli
from tests.harness.evidence import drilled_site

DAY = 86400.0


def _breaches(lb: LifeboatCli) -> tuple[int, list[str]]:
    proc = lb.run("status", "--json", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    [asset] = json.loads(proc.stdout)["assets"]
    return proc.returncode, asset["breaches"]


def test_a_drill_overdue_and_an_asset_never_drilled_are_breaches(tmp_path: Path) -> None:
    lb = drilled_site(tmp_path, "weekly", rpo="30d", drill_every="7d")
    lb.at(-6 * DAY).run("init")
    lb.at(-6 * DAY).run("backup", "conf")
    backed_up = lb.at(-6 * DAY).run("snapshots", "--json")
    day = json.loads(backed_up.stdout)[0]["time"][:10]

    # a new asset has one cadence to get its first drill
    assert _breaches(lb) == (0, [])
    never = f"never drilled: backed up since {day}, the class drills every 7 d"
    assert _breaches(lb.at(1 * DAY + 2 * 3600)) == (1, [never])

    drill = json.loads(lb.run("drill", "run", "weekly", "--json").stdout)
    assert drill["verdict"] == "pass", drill["reasons"]
    assert _breaches(lb.at(7 * DAY + 1800)) == (0, [])  # within the hour's grace
    code, breaches = _breaches(lb.at(7 * DAY + 2 * 3600))
    assert (code, breaches) == (
        1,
        [f"drill overdue: last drilled {drill['started'][:19]}, the class drills every 7 d"],
    )


def test_a_drill_that_failed_before_leaving_evidence_is_the_newest_word(tmp_path: Path) -> None:
    """A drill that could not even open the repository (the recovery key gone) leaves no
    bundle, only its audit entry: status names that failure over the pass before it."""
    lb = drilled_site(tmp_path)
    lb.run("init")
    lb.run("backup", "conf")
    assert json.loads(lb.run("drill", "run", "outage", "--json").stdout)["verdict"] == "pass"
    assert _breaches(lb) == (0, [])
    key = tmp_path / "keys" / "recovery.key"
    key.rename(tmp_path / "elsewhere.key")
    assert lb.run("drill", "run", "outage", check=False).returncode != 0
    (tmp_path / "elsewhere.key").rename(key)
    code, breaches = _breaches(lb)
    assert code == 1 and len(breaches) == 1, breaches
    assert breaches[0].startswith("drill outage failed (") and "without leaving evidence: " in breaches[0]
    assert json.loads(lb.run("drill", "run", "outage", "--json").stdout)["verdict"] == "pass"
    assert _breaches(lb) == (0, [])  # a drill that passed since is the newest word again
