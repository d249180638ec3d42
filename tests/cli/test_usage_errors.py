"""Usage errors: one `lifeboat: error:` line (+ a hint), exit 2, never an internal error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import Cli, write_policy
from tests.harness import LifeboatCli


def assert_usage_error(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert lines[0].startswith("lifeboat: error: "), proc.stderr
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), proc.stderr
    for text in expected:
        assert text in proc.stderr, proc.stderr


@pytest.fixture
def kinds(tmp_path: Path) -> Cli:
    """A development policy with a files, a postgres and an objects asset; the files one backed up."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.conf").write_text("a = 1\n")
    policy = write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}")
    with policy.open("a") as f:
        f.write(f"""
[assets.maindb]
kind = "postgres"
class = "standard"
dsn = "host=/nonexistent port=1"

[assets.media]
kind = "objects"
class = "standard"
source = "dir://{tmp_path / "bucket"}"
""")
    cli = Cli(policy=policy, root=tmp_path, source=source)
    cli.env["LIFEBOAT_ACTOR"] = "test"
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    cli.run("backup", "config")
    return cli


def test_version_prints_the_version():
    from lifeboat import __version__

    proc = LifeboatCli(timeout=60).run("--version", check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"lifeboat {__version__}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["backupp"], ["no such command 'backupp'", "hint: did you mean 'backup'?"]),
        (["policy", "chek"], ["no such command 'chek'", "did you mean 'check'?", "lifeboat policy --help"]),
        (["restore"], ["missing argument", "asset", "hint: run 'lifeboat restore --help'"]),
        (["restore", "config", "--bogus"], ["no such option: --bogus", "lifeboat restore --help"]),
        (["backup", "--jsno"], ["no such option: --jsno", "did you mean --json?"]),
        (["restore", "config", "--port", "many"], ["'--port'"]),
    ],
)
def test_click_usage_errors_are_one_line_and_exit_2(tmp_path, args, expected):
    proc = LifeboatCli(tmp_path / "none.toml", timeout=60).run(*args, check=False)
    assert_usage_error(proc, *expected)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["config", "--snapshot", "abc", "--at", "2026-01-01T00:00:00Z"], "--snapshot and --at are mutually"),
        (["maindb", "--at", "2026-01-01T00:00:00Z", "--lsn", "0/3000000"], "--at and --lsn are mutually"),
        (["maindb", "--xid", "7", "--name", "before", "--latest"], "--xid and --name and --latest"),
        (["config", "--lsn", "0/3000000"], "--lsn does not apply to files assets"),
        (["config", "--latest"], "--latest does not apply to files assets"),
        (["media", "--start"], "--start does not apply to objects assets"),
        (["config", "--port", "5999"], "--port does not apply to files assets"),
        (["maindb", "--in-place", "--yes"], "--in-place does not apply to postgres assets"),
        (["config", "--in-place"], "--in-place does not apply to files assets"),
        (["maindb", "--xid", "12; drop"], "--xid '12; drop' is not a transaction id"),
        (["maindb", "--lsn", "0/3000000'"], '--lsn "0/3000000\'" is not an LSN'),
        (["maindb", "--name", "x" * 64], "is not a restore point name (1 to 63 characters)"),
    ],
)
def test_conflicting_or_inapplicable_restore_options_are_usage_errors(kinds, args, expected):
    proc = kinds.run("restore", *args, "--target", str(kinds.root / "out"), check=False)
    assert_usage_error(proc, expected)
    assert not (kinds.root / "out").exists()


def test_a_time_in_the_future_is_refused_with_the_newest_restorable_time(kinds):
    # to the second, as the message prints it
    taken = json.loads(kinds.run("snapshots", "--json").stdout)[0]["time"][:19]
    proc = kinds.run(
        "restore",
        "config",
        "--at",
        "2099-01-01T00:00:00Z",
        "--target",
        str(kinds.root / "out"),
        "--recovery-key",
        str(kinds.root / "recovery.key"),
        check=False,
    )
    assert_usage_error(proc, "is in the future", f"newest restorable time of config is {taken}")
    assert not (kinds.root / "out").exists()


@pytest.mark.parametrize("verb", [["snapshots"], ["forget", "--dry-run"]])
def test_a_mistyped_asset_filter_is_an_error_not_an_empty_answer(kinds, verb):
    key = ["--recovery-key", str(kinds.root / "recovery.key")] if verb[0] == "forget" else []
    proc = kinds.run(*verb, "--asset", "confg", *key, check=False)
    assert_usage_error(proc, "unknown asset 'confg' (known: config, maindb, media)")
    listed = json.loads(kinds.run("snapshots", "--asset", "config", "--json").stdout)
    assert [s["asset"] for s in listed] == ["config"]
