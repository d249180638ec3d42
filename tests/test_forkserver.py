"""The suite's fork server (tests/harness/forkserver.py) must be invisible to lifeboat: a
run forked from it prints, writes and exits as the same command started by a fresh
interpreter, in the test's working directory and environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness import LifeboatCli, PolicyBuilder
from tests.harness.cli import fork_server


@pytest.fixture
def forked() -> None:
    if fork_server() is None:
        pytest.skip("the fork server is off in this run (LIFEBOAT_TEST_FORKSERVER=0 or coverage)")


def plain(cli: LifeboatCli, *args: str):  # type: ignore[no-untyped-def]
    """The same command through a fresh interpreter (what `run` did before the server)."""
    return cli.shell(cli.command(*args), check=False)


def test_a_forked_run_prints_and_exits_as_a_fresh_interpreter(forked, tmp_path: Path) -> None:
    cli = LifeboatCli(cwd=tmp_path)
    for args in (["--version"], ["no-such-verb"], ["wal", "push"], ["snapshots", "--json"]):
        a, b = cli.run(*args, check=False), plain(cli, *args)
        assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr), args
    assert cli.run("no-such-verb", check=False).returncode == 2


def test_a_forked_run_has_the_tests_cwd_and_environment(forked, tmp_path: Path) -> None:
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .state(tmp_path / "state")
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 2})
        .files("docs", [tmp_path / "docs"])
        .write(tmp_path / "policy-from-env.toml")
    )
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("a\n")
    cli = LifeboatCli(cwd=tmp_path, env={**os.environ, "LIFEBOAT_CONFIG": policy.name})
    cli.run("init", "--recovery-key-out", "recovery.key")  # relative: the test's cwd
    cli.run("backup", "docs")
    assert (tmp_path / "recovery.key").is_file()
    assert [s["asset"] for s in cli.json("snapshots")] == ["docs"]
    # the clock offset travels in the environment too: two hours ahead, the backup is that old
    now, later = (cli.at(offset).json("status")["assets"][0]["exposure_s"] for offset in (0, 7200))
    assert now < 3600 and later >= 7200
