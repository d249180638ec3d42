"""`lifeboat policy init` on a real cluster and a real (moto, over HTTP) bucket: the policy
it writes names what it detected and passes `lifeboat policy check`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.harness import LifeboatCli


def lifeboat(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # stdin is not a terminal (the runner gives /dev/null): no questions asked
    return LifeboatCli(timeout=120).run(*args, env=env, check=False)


@pytest.mark.parametrize("given", ["dsn", "pgdata"])
def test_init_detects_the_cluster_and_bucket_and_the_policy_passes_its_check(
    given, pg, make_bucket, s3_server, tmp_path
):
    bucket = make_bucket(object_lock=True)
    keys = tmp_path / "keys"
    keys.mkdir()
    out = tmp_path / "lifeboat.toml"
    target = pg.cluster.dsn if given == "dsn" else str(pg.root / "pgdata")
    # the endpoint as an option, or from the environment boto3 reads
    endpoint = ["--endpoint-url", s3_server] if given == "dsn" else []
    proc = lifeboat(
        "policy", "init", "--postgres", target, "--bucket", f"s3://{bucket}/lifeboat", *endpoint,
        "--keys", str(keys), "--mode", "production", "--out", str(out),
        **({} if endpoint else {"AWS_ENDPOINT_URL": s3_server}),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert f'pgdata = "{pg.root / "pgdata"}"' in text  # SHOW data_directory / the PGDATA given
    assert f'url = "s3://{bucket}/lifeboat"' in text and "lock_days = 35" in text  # Object Lock seen
    assert f'paths = ["{keys}"]' in text and f'endpoint_url = "{s3_server}"' in text
    commands = proc.stdout.split("next:")[1].split()
    assert commands.count("lifeboat") == 3 and "init" in commands and "configure" in commands
    check = lifeboat("--config", str(out), "policy", "check", "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    assert '"verdict": "error"' not in check.stdout


def test_init_never_overwrites_a_policy(tmp_path):
    out = tmp_path / "lifeboat.toml"
    out.write_text("# somebody's work\n")
    proc = lifeboat("policy", "init", "--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr.startswith("lifeboat: error: ") and "already exists" in proc.stderr
    assert out.read_text() == "# somebody's work\n"


def test_init_without_a_terminal_writes_a_policy_that_passes(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    out = tmp_path / "new.toml"
    proc = lifeboat("policy", "init", "--keys", str(keys), "--mode", "development", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert lifeboat("--config", str(out), "policy", "check").returncode == 0
    assert Path(out).stat().st_mode & 0o777 == 0o640


def test_on_a_terminal_init_asks_for_what_is_missing(tmp_path):
    import pty
    import select
    import time

    keys = tmp_path / "keys"
    keys.mkdir()
    out = tmp_path / "asked.toml"
    master, slave = pty.openpty()
    proc = LifeboatCli().popen(
        "policy", "init", "--out", str(out), "--mode", "staging", stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    answers = [b"\n", b"\n", str(keys).encode() + b"\n"]  # no postgres, no bucket, the keys dir
    seen, deadline = b"", time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            continue
        try:
            seen += os.read(master, 4096)
        except OSError:
            break
        if answers and seen.rstrip().endswith(b":"):  # a question waits for its answer
            os.write(master, answers.pop(0))
    assert proc.wait(timeout=60) == 0, seen.decode(errors="replace")
    os.close(master)
    assert b"PostgreSQL to protect" in seen and b"directory of key material" in seen
    assert b"mode" not in seen.split(b"directory of key material")[1].split(b"wrote")[0]  # given: not asked
    assert f'paths = ["{keys}"]' in out.read_text() and 'mode = "staging"' in out.read_text()
    # the next commands are for copy and paste: whole lines even on an 80-column terminal
    assert f"lifeboat --config {out} backup" in seen.decode().replace("\r", "")
