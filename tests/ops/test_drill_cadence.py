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
