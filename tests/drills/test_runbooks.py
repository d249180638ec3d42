"""Every `sh` block of every runbook, run against the demo sandbox: a runbook that no
longer works fails the build."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lifeboat.assets.postgres.cluster import free_port

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "operations" / "runbooks"
ORDER = ["database-pitr.md", "object-storage-rollback.md", "key-material-recovery.md", "full-outage.md"]


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
