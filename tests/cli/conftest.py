"""A policy + initialised repository driven through the real `lifeboat` executable."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

LIFEBOAT = [sys.executable, "-m", "lifeboat"]


@dataclass
class Cli:
    policy: Path
    root: Path
    source: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*LIFEBOAT, "--config", str(self.policy), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"lifeboat {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*LIFEBOAT, "--config", str(self.policy), *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


def write_policy(root: Path, source: Path, repo_url: str, extra_repo: str = "") -> Path:
    policy = root / "lifeboat.toml"
    policy.write_text(f"""
[repository]
url = "{repo_url}"
keyfile = "keys/backup.key"
{extra_repo}

[deployment]
mode = "development"

[classes.standard]
rpo = "1d"
rto = "1h"
retention = {{ last = 2 }}

[assets.config]
kind = "files"
class = "standard"
paths = ["{source}"]
""")
    return policy


@pytest.fixture(params=["file", "s3"])
def cli(request, tmp_path) -> Cli:
    source = tmp_path / "source"
    source.mkdir()
    if request.param == "file":
        url, extra = f"file://{tmp_path / 'repo'}", ""
    else:
        endpoint = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("make_bucket")()
        url, extra = f"s3://{bucket}/lifeboat", f'endpoint_url = "{endpoint}"\nallow_insecure_http = true'
    policy = write_policy(tmp_path, source, url, extra)
    env = {**os.environ, "LIFEBOAT_ACTOR": "test"}
    c = Cli(policy, tmp_path, source, env)
    c.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    return c
