"""`init` is all or nothing, and the escrow threshold the policy states is the one used."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeboat.storage import open_storage
from tests.cli.conftest import Cli, cli_for, write_policy
from tests.cli.test_usage_errors import assert_usage_error

ESCROW = """
[escrow]
threshold = 2
custodians = ["alice", "bob", "carol"]
"""


def escrow_cli(tmp_path: Path, mode: str, escrow: str) -> Cli:
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    (source / "a.conf").write_text("a = 1\n")
    policy = write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}")
    policy.write_text(policy.read_text().replace('mode = "development"', f'mode = "{mode}"') + escrow)
    return cli_for(policy, tmp_path, source, LIFEBOAT_ACTOR="test")


def written(root: Path) -> list[str]:
    """Everything under root but the policy and the backed-up source."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name != "lifeboat.toml" and "source" not in p.parts
    )


@pytest.mark.parametrize("mode", ["staging", "development"])
def test_stated_threshold_is_kept_by_a_mode_that_would_lower_it(tmp_path, mode):
    cli = escrow_cli(tmp_path, mode, ESCROW)
    check = cli.run("policy", "check", "--offline")
    assert "escrow 2-of-3 (from escrow.threshold)" in check.stdout
    out = json.loads(cli.run("init", "--shares-out", str(tmp_path / "shares"), "--json").stdout)
    assert out["threshold"] == 2
    assert sorted(Path(s).name for s in out["shares"]) == ["alice.share", "bob.share", "carol.share"]
    cli.run("backup", "config")
    one = cli.run("check", "--read-data", "--share", str(tmp_path / "shares" / "bob.share"), check=False)
    assert one.returncode == 2 and "1 share(s) given, 2 needed" in one.stderr
    two = [a for name in ("alice", "carol") for a in ("--share", str(tmp_path / "shares" / f"{name}.share"))]
    cli.run("restore", "config", "--target", str(tmp_path / "out"), *two)
    assert next((tmp_path / "out").rglob("a.conf")).read_text() == "a = 1\n"


def test_impossible_escrow_fails_before_writing_anything(tmp_path):
    cli = escrow_cli(tmp_path, "staging", ESCROW.replace("threshold = 2\n", ""))
    check = cli.run("policy", "check", "--offline", check=False)
    assert check.returncode == 1
    assert "escrow 1-of-3 (from the default of mode staging)" in check.stdout
    assert "error: escrow: 1-of-3 (the default of mode staging): SLIP-39 cannot make 1-of-3" in check.stdout
    proc = cli.run("init", "--shares-out", str(tmp_path / "shares"), check=False)
    assert_usage_error(proc, "escrow 1-of-3", "SLIP-39 cannot make 1-of-3 shares", "nothing was written")
    assert written(tmp_path) == []
    backup = cli.run("backup", "config", check=False)
    assert backup.returncode == 2 and "internal error" not in backup.stderr  # no repository to back up into


def test_policy_without_escrow_shows_no_escrow(tmp_path):
    out = escrow_cli(tmp_path, "production", "").run("policy", "check", "--offline", "--json")
    assert json.loads(out.stdout)["escrow"] is None
    text = escrow_cli(tmp_path, "production", "").run("policy", "check", "--offline").stdout
    assert "no escrow" in text and "-of-?" not in text


def test_existing_outputs_are_refused_before_the_repository_is_created(tmp_path):
    cli = escrow_cli(tmp_path, "production", ESCROW)
    shares = tmp_path / "shares"
    shares.mkdir()
    (shares / "bob.share").write_text("an older share\n")
    proc = cli.run("init", "--shares-out", str(shares), check=False)
    assert_usage_error(proc, f"share file {shares / 'bob.share'} already exists")
    assert written(tmp_path) == ["shares", "shares/bob.share"]
    assert (shares / "bob.share").read_text() == "an older share\n"


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Path]:
    """A 64 KiB tmpfs filled up: files can still be created in it, but not written."""
    disk = tmp_path / "full"
    disk.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
        ).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=4k"], capture_output=True)
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_step_failing_late_takes_back_what_init_wrote(tmp_path, full_disk):
    cli = escrow_cli(tmp_path, "production", ESCROW)
    shares = full_disk / "shares"
    proc = cli.run(
        "init", "--recovery-key-out", str(tmp_path / "rk"), "--shares-out", str(shares), check=False
    )
    assert_usage_error(proc, "init failed writing", "No space left on device", "nothing was kept")
    assert written(tmp_path) == ["full", "full/filler"]  # no repository, backup key, recovery key, shares
    assert cli.run("backup", "config", check=False).returncode == 2
    (full_disk / "filler").unlink()
    cli.run("init", "--recovery-key-out", str(tmp_path / "rk"), "--shares-out", str(shares))
    assert sorted(p.name for p in shares.iterdir()) == ["alice.share", "bob.share", "carol.share"]


def test_a_late_failure_leaves_no_repository_in_the_bucket(tmp_path, full_disk, s3_server, make_bucket):
    cli = escrow_cli(tmp_path, "production", ESCROW)
    bucket = make_bucket()
    url = f"s3://{bucket}/lifeboat"
    cli.policy.write_text(
        cli.policy.read_text().replace(
            f'url = "file://{tmp_path / "repo"}"',
            f'url = "{url}"\nendpoint_url = "{s3_server}"\nallow_insecure_http = true',
        )
    )
    proc = cli.run("init", "--shares-out", str(full_disk / "shares"), check=False)
    assert_usage_error(proc, "No space left on device", "nothing was kept")
    assert list(open_storage(url, endpoint_url=s3_server).list("")) == []
    assert written(tmp_path) == ["full", "full/filler"]
    (full_disk / "filler").unlink()
    cli.run("init", "--shares-out", str(full_disk / "shares"))  # nothing left in the way
    assert open_storage(url, endpoint_url=s3_server).exists("config")


def test_escrow_split_over_an_old_share_writes_no_share_and_no_record(tmp_path):
    cli = escrow_cli(tmp_path, "production", ESCROW)
    cli.run("init", "--recovery-key-out", str(tmp_path / "rk"))
    out = tmp_path / "new-shares"
    out.mkdir()
    (out / "carol.share").write_text("carol's old share\n")
    proc = cli.run("escrow", "split", "--recovery-key", str(tmp_path / "rk"), "--out", str(out), check=False)
    assert_usage_error(proc, f"{out / 'carol.share'} already exists; refusing to overwrite a share")
    assert sorted(p.name for p in out.iterdir()) == ["carol.share"]
    assert (out / "carol.share").read_text() == "carol's old share\n"
    assert list(open_storage(f"file://{tmp_path / 'repo'}").list("records/escrow")) == []
    cli.run("escrow", "split", "--recovery-key", str(tmp_path / "rk"), "--out", str(tmp_path / "fresh"))
    assert len(list(open_storage(f"file://{tmp_path / 'repo'}").list("records/escrow"))) == 1
