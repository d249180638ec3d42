"""Inputs that look like typos are errors, not something else done quietly."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Cli, cli_for, write_policy
from tests.cli.test_usage_errors import assert_usage_error
from tests.harness import PolicyBuilder


@pytest.mark.parametrize(
    ("url", "suggestion"),
    [
        ("s3:/bucket/prefix", "did you mean s3://bucket/prefix?"),
        ("file:/x/repo", "did you mean file:///x/repo?"),
        ("s3//bucket", "did you mean s3://bucket?"),
        ("S3://bucket/prefix", "did you mean s3://bucket/prefix?"),
        ("s3:bucket", "did you mean s3://bucket?"),
        ("dir:///x/repo", "did you mean file:///x/repo?"),
        ("http://example.com/repo", "use s3://bucket/prefix"),
    ],
)
def test_mistyped_repository_url_is_refused_with_a_suggestion(tmp_path, url, suggestion):
    source = tmp_path / "source"
    source.mkdir()
    policy = write_policy(tmp_path, source, url)
    cli = cli_for(policy, tmp_path, source, LIFEBOAT_ACTOR="test")
    before = sorted(tmp_path.rglob("*"))
    for verb in (["policy", "check", "--offline"], ["init", "--recovery-key-out", str(tmp_path / "rk")]):
        proc = cli.run(*verb, check=False)
        assert_usage_error(proc, f"{policy}: repository.url: {url!r} is not a repository URL", suggestion)
    assert sorted(tmp_path.rglob("*")) == before  # no directory named after the typo, no key


@pytest.mark.parametrize("url", ["repo", "./repo", "backups//repo"])
def test_plain_paths_are_still_repositories(tmp_path, url):
    source = tmp_path / "source"
    source.mkdir()
    cli = cli_for(write_policy(tmp_path, source, url), tmp_path, source)
    cli.run("init", "--recovery-key-out", str(tmp_path / "rk"))
    assert (tmp_path / url / "config").exists()


# Root ignores modes (chmod 0500 stops nothing), so the state directory is made read-only
# for root either by mounting a read-only tmpfs over it (EROFS, as on a read-only
# filesystem) or with the immutable attribute on it and its files (EPERM).
READ_ONLY = {
    "ro-mount": (["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"], ["umount"]),
    "immutable": (["chattr", "-R", "+i"], ["chattr", "-R", "-i"]),
}


@pytest.fixture(params=sorted(READ_ONLY))
def read_only_state(request, tmp_path) -> Iterator[tuple[Cli, Path]]:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.conf").write_text("a = 1\n")
    cli = cli_for(write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}"), tmp_path, source)
    cli.run("init", "--recovery-key-out", str(tmp_path / "rk"))
    state = tmp_path / ".lifeboat"
    assert (state / "audit.jsonl").exists()
    protect, unprotect = READ_ONLY[request.param]
    if os.geteuid() != 0 or subprocess.run([*protect, str(state)], capture_output=True).returncode:
        pytest.skip(f"cannot make a directory read-only for root with {protect[0]} here")
    try:
        yield cli, state
    finally:
        subprocess.run([*unprotect, str(state)], check=True)


def test_read_only_state_dir_fails_the_backup_before_any_commit(read_only_state):
    cli, state = read_only_state
    for _ in range(3):
        proc = cli.run("backup", "config", check=False)
        assert_usage_error(proc, f"state directory {state} is not writable", "nothing was changed")
    snapshots = json.loads(cli.run("snapshots", "--json").stdout)
    assert snapshots == []  # three failed attempts, no snapshot committed without its audit entry


def _check(tmp_path: Path, mode: str, extra: str) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    policy = write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}")
    policy.write_text(policy.read_text().replace('mode = "development"', f'mode = "{mode}"') + extra)
    return cli_for(policy, tmp_path, source).run("policy", "check", "--offline", check=False)


MISSING = """
[assets.etc]
kind = "files"
class = "standard"
paths = ["/nonexistent/platform"]

[assets.db]
kind = "postgres"
class = "standard"
dsn = "host=/tmp port=5432"
pgdata = "/nonexistent/pgdata"

[assets.media]
kind = "objects"
class = "standard"
source = "dir:///nonexistent/media"
"""


def test_policy_check_reports_missing_paths_as_errors_in_production(tmp_path):
    proc = _check(tmp_path, "production", MISSING)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error: etc: path /nonexistent/platform does not exist" in proc.stdout
    assert "error: db: pgdata /nonexistent/pgdata is not a readable PostgreSQL data directory" in proc.stdout
    assert "error: media: path /nonexistent/media does not exist" in proc.stdout


def test_policy_check_warns_about_missing_paths_in_development(tmp_path):
    proc = _check(tmp_path, "development", MISSING)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warn: etc: path /nonexistent/platform does not exist" in proc.stdout
    assert "error:" not in proc.stdout


def test_policy_check_exits_1_on_any_error_line(tmp_path):
    assert _check(tmp_path, "development", "").returncode == 0  # the plain policy is clean
    weekly = f"""
[assets.weekly]
kind = "files"
class = "standard"
paths = ["{tmp_path}"]
schedule = "0 0 * * 0"
"""
    proc = _check(tmp_path, "development", weekly)
    assert "error: weekly: schedule runs every 7d but the RPO is 1d" in proc.stdout
    assert proc.returncode == 1, proc.stdout


def _online_check(tmp_path: Path, mode: str, endpoint: str, repo_bucket: str, media_bucket: str):
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    policy = (
        PolicyBuilder(mode=mode)
        .s3_repository(endpoint, repo_bucket, "lifeboat")
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 2})
        .files("config", [source])
        .objects("media", f"s3://{media_bucket}/uploads", endpoint_url=endpoint)
        .write(tmp_path / "lifeboat.toml")
    )
    cli = cli_for(policy, tmp_path, source)
    return cli, cli.run("policy", "check", "--json", check=False)


def test_policy_check_reports_buckets_it_cannot_see(tmp_path, s3_server, make_bucket):
    _, proc = _online_check(tmp_path, "production", s3_server, "no-such-repo-bucket", "no-such-media")
    findings = {(f["asset"], f["level"]): f["message"] for f in json.loads(proc.stdout)["findings"]}
    assert proc.returncode == 1, proc.stdout
    assert "cannot reach s3://no-such-repo-bucket/lifeboat" in findings[("repository", "error")]
    assert "cannot see bucket s3://no-such-media/uploads" in findings[("media", "error")]
    _, dev = _online_check(tmp_path, "development", s3_server, "no-such-repo-bucket", "no-such-media")
    assert dev.returncode == 0 and all(f["level"] == "warn" for f in json.loads(dev.stdout)["findings"])
    _, ok = _online_check(tmp_path, "production", s3_server, make_bucket(), make_bucket())
    messages = [f["message"] for f in json.loads(ok.stdout)["findings"]]
    assert ok.returncode == 0 and not [m for m in messages if "cannot" in m], messages
    assert any("no repository at s3://" in m and "run 'lifeboat init'" in m for m in messages)
