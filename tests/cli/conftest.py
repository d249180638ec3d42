"""A policy + initialised repository driven through the real `lifeboat` executable."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Clock, LifeboatCli, PolicyBuilder


@dataclass
class Cli(LifeboatCli):
    """The runner plus where this test's sandbox lives and the directory it backs up."""

    root: Path = field(default=Path("."))
    source: Path = field(default=Path("."))


def cli_for(policy: Path, root: Path, source: Path, **env: str) -> Cli:
    """A runner for a policy a test wrote itself (``env``: extra variables, e.g. the actor)."""
    cli = Cli(policy=policy, root=root, source=source)
    cli.env.update(env)
    return cli


def write_policy(root: Path, source: Path, repo_url: str, **repo: Any) -> Path:
    return (
        PolicyBuilder()
        .repository(repo_url, **repo)
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 2})
        .files("config", [source])
        .write(root / "lifeboat.toml")
    )


# The S3 repository is SeaweedFS, a real S3 server (moto spends 5-8 ms of CPU a request,
# and these tests make thousands); tests of what only moto can fake use it by name.
@pytest.fixture(params=["file", "s3"])
def cli(request, tmp_path, clock: Clock) -> Cli:
    source = tmp_path / "source"
    source.mkdir()
    if request.param == "file":
        policy = write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}")
    else:
        endpoint = request.getfixturevalue("seaweed").endpoint
        bucket = request.getfixturevalue("make_seaweed_bucket")()
        policy = write_policy(tmp_path, source, f"s3://{bucket}/lifeboat", endpoint_url=endpoint)
    c = Cli(policy=policy, clock=clock, root=tmp_path, source=source)
    c.env["LIFEBOAT_ACTOR"] = "test"
    c.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    return c
