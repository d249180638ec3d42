"""Every `sh` block of every runbook, run against the demo sandbox: a runbook that no
longer works fails the build."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lifeboat.assets.postgres.cluster import free_port

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "operations" / "runbooks"
# key-material-recovery rotates the keys, so it runs last: the package's lifeboat clock is
# frozen at the end of the demo (tests/drills/conftest.py) while audit entries carry real
# times, so a rotation revokes the old writer at the frozen instant and every later (real
# time) audit copy that writer signed before the rotation would read as signed after its
# revocation. In production the registry and the audit log read one clock.
ORDER = ["database-pitr.md", "object-storage-rollback.md", "full-outage.md", "key-material-recovery.md"]


def sh_blocks(path: Path) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", path.read_text(), flags=re.S)


def test_every_runbook_is_listed_and_has_commands():
    assert sorted(p.name for p in RUNBOOKS.glob("*.md") if p.name != "README.md") == sorted(ORDER)
    assert all(sh_blocks(RUNBOOKS / name) for name in ORDER)


@pytest.mark.parametrize("name", ORDER)
def test_runbook_commands_work(demo, name):
    staging = demo.tmpdir(f"runbook-{name.removesuffix('.md')}")
    script = "set -euo pipefail\n" + "\n".join(sh_blocks(RUNBOOKS / name))
    proc = demo.shell(
        ["bash", "-c", script], check=False, env={"STAGING": str(staging), "PORT": str(free_port())}
    )
    assert proc.returncode == 0, f"{name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
