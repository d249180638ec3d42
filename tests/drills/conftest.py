"""One sandbox for the drill tests: `lifeboat demo` run once (it builds the platform,
backs it up, destroys it and runs the full-outage drill), then reused read-mostly."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lifeboat.assets.postgres.cluster import run_as_user
from tests.harness import Clock, LifeboatCli
from tests.harness.clock import real_env


@dataclass
class Demo(LifeboatCli):
    """The runner inside the demo's sandbox (as its OS user), with what ``lifeboat demo`` printed."""

    root: Path = field(default=Path("."))
    output: str = ""

    def shares(self, *custodians: str) -> list[str]:
        """``--share`` options for these custodians' shares."""
        return [
            arg for name in custodians for arg in ("--share", str(self.root / "shares" / f"{name}.share"))
        ]

    def tmpdir(self, name: str) -> Path:
        path = self.root / "scratch" / name
        path.mkdir(parents=True)
        if self.user:
            shutil.chown(path.parent, self.user)
            shutil.chown(path, self.user)
        return path


def demo_env(root: Path) -> dict[str, str]:
    """What an operator following the runbooks has set: the policy, the shares, lifeboat on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        **real_env(),
        "LIFEBOAT_CONFIG": str(root / "lifeboat.toml"),
        "SHARES": str(root / "shares"),
        "PATH": f"{venv_bin}:{os.environ['PATH']}",
        "HOME": str(root),
    }


# session, not package: xdist interleaves packages on a worker, and a package fixture is
# rebuilt each time its package comes back (four 35-second demos in one run)
@pytest.fixture(scope="session")
def demo() -> Iterator[Demo]:
    parent = Path(tempfile.mkdtemp(prefix="lb-demo-", dir="/tmp"))
    os.chmod(parent, 0o755)
    root = parent / "sandbox"
    proc = LifeboatCli(timeout=600).run("demo", "--dir", str(root), "--traffic-seconds", "2")
    # The demo destroyed its platform: a drill can only bound its RPO by the time since the
    # newest data it restores, which grows with every test that runs before it. Every test
    # here sees lifeboat's clock stopped at the end of the demo, so no verdict depends on
    # how long the package has been running.
    clock = Clock()
    clock.freeze(time.time())
    policy = root / "lifeboat.toml"
    yield Demo(
        policy,
        demo_env(root),
        run_as_user(),
        cwd=root,
        clock=clock,
        timeout=600,
        root=root,
        output=proc.stdout,
    )
    shutil.rmtree(parent, ignore_errors=True)
