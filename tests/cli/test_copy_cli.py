"""Repository copies (3-2-1): `lifeboat copy`, reading from a copy, restore fallback, drills
from a copy, copy lag in `status`, and an interrupted copy resumed. Real parts throughout:
a files repository, two moto S3 servers on separate ports (separate endpoint processes as
far as lifeboat can tell), the real `lifeboat` executable."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from lifeboat.storage import open_storage
from tests.cli.conftest import LIFEBOAT
from tests.conftest import free_port


@dataclass
class Endpoint:
    url: str
    server: ThreadedMotoServer

    def bucket(self, name: str) -> str:
        # moto's servers in one process share their buckets: unique names keep tests apart
        name = f"{name}-{secrets.token_hex(4)}"
        boto3.client("s3", endpoint_url=self.url).create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        return name


@pytest.fixture
def endpoints() -> Iterator[tuple[Endpoint, Endpoint]]:
    """Two independent S3 endpoints: the primary's and the copy's."""
    started = []
    for _ in range(2):
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        started.append(Endpoint(f"http://127.0.0.1:{port}", server))
    yield started[0], started[1]
    for e in started:
        try:
            e.server.stop()
        except Exception:  # already stopped by the test
            pass


@dataclass
class Setup:
    root: Path
    policy: Path
    source: Path
    env: dict[str, str]

    def run(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*LIFEBOAT, "--config", str(self.policy), *args],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=300,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"lifeboat {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def json(self, *args: str, env: dict[str, str] | None = None) -> object:
        return json.loads(self.run(*args, "--json", env=env).stdout)


def make_setup(
    root: Path, primary: tuple[str, str], copy: tuple[str, str], *, copy_extra: str = ""
) -> Setup:
    source = root / "source"
    source.mkdir()
    (root / "evidence").mkdir()
    primary_endpoint = f'endpoint_url = "{primary[1]}"' if primary[1] else ""
    copy_endpoint = f'endpoint_url = "{copy[1]}"' if copy[1] else ""
    policy = root / "lifeboat.toml"
    policy.write_text(f"""
[repository]
url = "{primary[0]}"
{primary_endpoint}
keyfile = "keys/backup.key"
recovery_key = "keys/recovery.key"
stall_timeout = "5s"

[copies.offsite]
url = "{copy[0]}"
{copy_endpoint}
copy_rpo = "1h"
{copy_extra}

[deployment]
mode = "development"

[classes.standard]
rpo = "1d"
rto = "1h"

[assets.config]
kind = "files"
class = "standard"
paths = ["{source}"]

[drills.offsite-drill]
scenario = "full-outage"
assets = ["config"]
repository = "offsite"
evidence_dir = "{root / "evidence"}"
""")
    setup = Setup(root, policy, source, {**os.environ, "LIFEBOAT_ACTOR": "test"})
    setup.run("init")
    return setup


def fill(source: Path, files: int, size: int, seed: str) -> None:
    for i in range(files):
        (source / f"{seed}-{i:03d}.bin").write_bytes(os.urandom(size))


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def stored(url: str, endpoint: str | None) -> dict[str, bytes]:
    storage = open_storage(url, endpoint_url=endpoint)
    try:
        return {o.name: storage.get(o.name) for o in storage.list() if not o.name.startswith("locks/")}
    finally:
        storage.close()


def test_copy_from_a_file_repository_is_verbatim_and_incremental(tmp_path, endpoints):
    _, offsite = endpoints
    bucket = offsite.bucket("offsite")
    setup = make_setup(tmp_path, (f"file://{tmp_path / 'repo'}", ""), (f"s3://{bucket}/copy", offsite.url))
    fill(setup.source, 5, 300_000, "a")
    setup.run("backup", "config")

    first = setup.json("copy", "offsite")
    assert first["config_copied"] is True
    assert first["copied"]["packs"] >= 1 and first["copied"]["indexes"] >= 1
    assert first["copied"]["snapshots"] == 1
    assert first["bytes"] >= 1_500_000  # the encrypted file data went across

    # byte for byte: nothing was decrypted or re-encoded on the way
    primary = stored(f"file://{tmp_path / 'repo'}", None)
    copy = stored(f"s3://{bucket}/copy", offsite.url)
    assert {n: b for n, b in copy.items() if not n.startswith("audit/")} == {
        n: b for n, b in primary.items() if not n.startswith("audit/")
    }

    again = setup.json("copy", "offsite")
    assert again["objects"] == 0 and again["bytes"] == 0 and again["already_there"] >= first["objects"]

    fill(setup.source, 1, 200_000, "b")
    setup.run("backup", "config")
    third = setup.json("copy", "offsite")
    assert third["copied"]["snapshots"] == 1
    assert 0 < third["bytes"] < first["bytes"]  # only the new data

    mine = setup.json("snapshots")
    theirs = setup.json("snapshots", "--repository", "offsite")
    assert [s["id"] for s in theirs] == [s["id"] for s in mine] and len(mine) == 2
    assert setup.run("check", "--read-data", "--repository", "offsite").returncode == 0

    audit = [json.loads(line) for line in (tmp_path / ".lifeboat" / "audit.jsonl").read_text().splitlines()]
    copies = [e for e in audit if e["operation"] == "copy"]
    assert len(copies) == 3 and copies[0]["details"]["objects"] == first["objects"]


def test_unknown_copy_and_a_foreign_repository_are_one_line_errors(tmp_path, endpoints):
    _, offsite = endpoints
    bucket = offsite.bucket("offsite")
    setup = make_setup(tmp_path, (f"file://{tmp_path / 'repo'}", ""), (f"s3://{bucket}/copy", offsite.url))
    proc = setup.run("copy", "nowhere", check=False)
    assert proc.returncode != 0 and "unknown repository copy 'nowhere' (known: offsite)" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = setup.run("snapshots", "--repository", "nowhere", check=False)
    assert proc.returncode != 0 and "unknown repository copy 'nowhere'" in proc.stderr

    # the copy location already holds another repository: refused, nothing mixed
    other = tmp_path / "other"
    other.mkdir()
    other_policy = make_setup(other, (f"s3://{bucket}/copy", offsite.url), (f"file://{other / 'x'}", ""))
    del other_policy
    proc = setup.run("copy", "offsite", check=False)
    assert proc.returncode != 0 and "holds another repository" in proc.stderr


def test_primary_endpoint_down_restore_check_and_drill_run_from_the_copy(tmp_path, endpoints):
    main, offsite = endpoints
    primary_bucket, copy_bucket = main.bucket("primary"), offsite.bucket("offsite")
    setup = make_setup(
        tmp_path, (f"s3://{primary_bucket}/repo", main.url), (f"s3://{copy_bucket}/repo", offsite.url)
    )
    fill(setup.source, 4, 250_000, "a")
    (setup.source / "sub").mkdir()
    (setup.source / "sub" / "note.txt").write_text("kept offsite\n")
    setup.run("backup", "config")
    setup.run("copy", "offsite")
    expected = tree(setup.source)

    main.server.stop()  # the primary's endpoint is gone

    down = setup.run("snapshots", check=False)
    assert down.returncode != 0 and "lifeboat: error:" in down.stderr

    out = setup.run("restore", "config", "--target", str(tmp_path / "restored"))
    assert "primary repository unreachable" in out.stdout and "'offsite'" in out.stdout
    assert tree(tmp_path / "restored" / "source") == expected

    data = setup.json("restore", "config", "--target", str(tmp_path / "restored-json"))
    assert data["repository"] == "offsite" and data["primary_unreachable"]
    assert tree(tmp_path / "restored-json" / "source") == expected

    assert "no problems found" in setup.run("check", "--read-data", "--repository", "offsite").stdout

    drill = setup.json("drill", "run", "offsite-drill")
    assert drill["verdict"] == "pass" and drill["repository"] == "offsite"
    assert any(c["name"] == "file checksums" and c["ok"] for c in drill["checks"])


def test_restore_without_copies_fails_plainly_when_the_primary_is_down(tmp_path, endpoints):
    main, offsite = endpoints
    bucket = main.bucket("primary")
    setup = make_setup(tmp_path, (f"s3://{bucket}/repo", main.url), (f"file://{tmp_path / 'nocopy'}", ""))
    fill(setup.source, 1, 1000, "a")
    setup.run("backup", "config")
    main.server.stop()
    # the copy was never made: it holds no repository, so the restore fails naming both
    proc = setup.run("restore", "config", "--target", str(tmp_path / "r"), check=False)
    assert proc.returncode != 0 and "trying copy 'offsite'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()
