"""One sandbox for the drill tests: `lifeboat demo` run once (it builds the platform,
backs it up, destroys it and runs the full-outage drill), then reused read-mostly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lifeboat.assets.postgres.cluster import run_as_user


@dataclass
class Demo:
    root: Path
    user: str | None
    output: str

    @property
    def policy(self) -> Path:
        return self.root / "lifeboat.toml"

    def env(self, **extra: str) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        return {
            **os.environ,
            "LIFEBOAT_CONFIG": str(self.policy),
            "SHARES": str(self.root / "shares"),
            "PATH": f"{venv_bin}:{os.environ['PATH']}",
            "HOME": str(self.root),
            **extra,
        }

    def run(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "lifeboat", *args]
        return self.shell(cmd, check=check, **env)

    def shell(self, cmd: list[str], check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=self.env(**env), timeout=600, cwd=self.root
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{cmd[-6:]} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def tmpdir(self, name: str) -> Path:
        path = self.root / "scratch" / name
        path.mkdir(parents=True)
        if self.user:
            shutil.chown(path.parent, self.user)
            shutil.chown(path, self.user)
        return path


@pytest.fixture(scope="package")
def demo() -> Iterator[Demo]:
    parent = Path(tempfile.mkdtemp(prefix="lb-demo-", dir="/tmp"))
    os.chmod(parent, 0o755)
    root = parent / "sandbox"
    proc = subprocess.run(
        [sys.executable, "-m", "lifeboat", "demo", "--dir", str(root), "--traffic-seconds", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    yield Demo(root, run_as_user(), proc.stdout)
    shutil.rmtree(parent, ignore_errors=True)
