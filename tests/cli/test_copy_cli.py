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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from lifeboat.storage import open_storage
from tests.cli.conftest import Cli
from tests.conftest import free_port
from tests.harness import PolicyBuilder
from tests.harness.stallproxy import StallProxy
from tests.harness.wait import wait_until


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


def make_setup(
    root: Path,
    primary: tuple[str, str],
    copy: tuple[str, str],
    *,
    copy_extra: dict[str, Any] | None = None,
    drill: bool = True,
    daemon_retries: int | None = None,
) -> Cli:
    source = root / "source"
    source.mkdir(parents=True)
    (root / "evidence").mkdir()
    builder = (
        PolicyBuilder()
        .repository(
            primary[0],
            endpoint_url=primary[1] or None,
            recovery_key="keys/recovery.key",
            stall_timeout="5s",
        )
        .copy("offsite", copy[0], endpoint_url=copy[1] or None, copy_rpo="1h", **(copy_extra or {}))
        .data_class("standard", rpo="1d", rto="1h")
        .files("config", [source])
    )
    if daemon_retries is not None:
        builder.daemon(retries=daemon_retries)
    if drill:
        builder.drill(
            "offsite-drill", "full-outage", ["config"], repository="offsite", evidence_dir=root / "evidence"
        )
    setup = Cli(policy=builder.write(root / "lifeboat.toml"), root=root, source=source)
    setup.env["LIFEBOAT_ACTOR"] = "test"
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
    own = ("audit/", "records/copies/")  # the copy's own: audit copies, and its copy record
    assert {n: b for n, b in copy.items() if not n.startswith(own)} == {
        n: b for n, b in primary.items() if not n.startswith(own)
    }
    # the copy record dates the copied snapshot by the source's write time: none for a
    # file repository, whose times its writers set (repo/storage_times.py)
    [record] = [json.loads(b) for n, b in copy.items() if n.startswith("records/copies/")]
    copied = [n.rsplit("/", 1)[-1] for n in primary if n.startswith("snapshots/")]
    assert record == {"snapshots": dict.fromkeys(copied)}

    again = setup.json("copy", "offsite")
    # nothing but the signed audit copy of the first copy's own entry (audit/, in "refs")
    assert again["objects"] == again["copied"].get("refs", 0) == 1 and again["bytes"] < 4096
    assert again["already_there"] >= first["objects"]

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
    # a copy is written only by `lifeboat copy`: a backup into it would make it diverge
    proc = setup.run("--repository", "offsite", "backup", "config", check=False)
    assert proc.returncode == 2 and "'backup' works on the primary only" in proc.stderr
    assert not setup.run("snapshots", "--json").stdout.strip("[]\n ")

    # a "copy" in the primary's own place protects nothing
    text = setup.policy.read_text()
    setup.policy.write_text(text.replace(f's3://{bucket}/copy"', f'file://{tmp_path / "repo"}"'))
    proc = setup.run("copy", "offsite", check=False)
    assert proc.returncode == 2 and "is the primary repository itself" in proc.stderr
    setup.policy.write_text(text)

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
    assert setup.run("evidence", "verify", drill["bundle"], "--key", drill["signing_key"]).returncode == 0
    signed = json.loads((Path(drill["bundle"]) / "drill.json").read_text())
    assert signed["repository"] == "offsite"  # the evidence says which copy proved itself


def test_restore_without_copies_fails_plainly_when_the_primary_is_down(tmp_path, endpoints):
    main, _ = endpoints
    bucket = main.bucket("primary")
    setup = make_setup(tmp_path, (f"s3://{bucket}/repo", main.url), (f"file://{tmp_path / 'nocopy'}", ""))
    fill(setup.source, 1, 1000, "a")
    setup.run("backup", "config")
    main.server.stop()
    # the copy was never made: it holds no repository, so the restore fails naming both
    proc = setup.run("restore", "config", "--target", str(tmp_path / "r"), check=False)
    assert proc.returncode != 0 and "trying copy 'offsite'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()


HOUR = 3600


def copy_row(setup: Cli, offset: float = 0) -> tuple[int, dict[str, object]]:
    proc = setup.at(offset).run("status", "--json", check=False)
    data = json.loads(proc.stdout)
    (row,) = data["copies"]
    return proc.returncode, row


def test_status_shows_copy_lag_and_breaches_copy_rpo_when_the_copy_falls_behind(tmp_path, endpoints):
    _, offsite = endpoints
    bucket = offsite.bucket("offsite")
    setup = make_setup(
        tmp_path, (f"file://{tmp_path / 'repo'}", ""), (f"s3://{bucket}/copy", offsite.url), drill=False
    )
    fill(setup.source, 2, 10_000, "a")
    setup.run("backup", "config")
    setup.run("copy", "offsite")
    code, row = copy_row(setup, offset=3 * HOUR)  # long after the copy, nothing new: up to date
    assert code == 0 and row["lag_s"] == 0 and row["missing_snapshots"] == 0 and row["breach"] is False

    # a new backup that is not copied: the copy lags from that snapshot on
    fill(setup.source, 1, 10_000, "b")
    setup.run("backup", "config")
    code, row = copy_row(setup, offset=0)
    assert code == 0 and row["missing_snapshots"] == 1 and 0 <= row["lag_s"] < HOUR
    code, row = copy_row(setup, offset=2 * HOUR)  # copy_rpo is 1h
    assert code == 1 and row["breach"] is True and 2 * HOUR <= row["lag_s"] < 3 * HOUR
    text = setup.at(2 * HOUR).run("status", check=False).stdout
    assert "copy offsite" in text and "1 snapshot(s) missing" in text and "BREACH" in text

    setup.run("copy", "offsite")
    code, row = copy_row(setup, offset=2 * HOUR)
    assert code == 0 and row["lag_s"] == 0 and row["breach"] is False


def test_daemon_runs_the_copy_and_a_failing_copy_job_shows_as_a_breach(tmp_path, endpoints):
    _, offsite = endpoints
    working = make_setup(
        tmp_path / "working",
        (f"file://{tmp_path / 'working' / 'repo'}", ""),
        (f"s3://{offsite.bucket('offsite')}/copy", offsite.url),
        daemon_retries=0,
        drill=False,
    )
    fill(working.source, 2, 10_000, "a")
    working.run("backup", "config")
    working.run("daemon", "--once-due", "--no-http")
    code, row = copy_row(working)
    assert code == 0 and row["lag_s"] == 0 and row["last_copy_outcome"] == "ok"
    assert len(working.json("snapshots", "--repository", "offsite")) == 1

    # the copy's endpoint is gone: the daemon's copy job fails, and status says so
    failing = make_setup(
        tmp_path / "failing",
        (f"file://{tmp_path / 'failing' / 'repo'}", ""),
        (f"s3://{offsite.bucket('offsite')}/copy", offsite.url),
        daemon_retries=0,
        drill=False,
    )
    fill(failing.source, 1, 10_000, "b")
    failing.run("backup", "config")
    offsite.server.stop()
    failing.run("daemon", "--once-due", "--no-http", check=False)
    history = (tmp_path / "failing" / ".lifeboat" / "runs.jsonl").read_text().splitlines()
    runs = [json.loads(line) for line in history]
    assert [r["outcome"] for r in runs if r["job"] == "copy:offsite"] == ["failed"]
    code, row = copy_row(failing, offset=2 * HOUR)
    assert code == 1 and row["breach"] is True and row["last_copy_outcome"] == "failed"
    assert row["lag_s"] is None and row["error"]  # unreadable: a breach, never "ok"
    text = failing.run("status", check=False).stdout
    assert "last copy FAILED" in text and "BREACH" in text


def test_an_interrupted_copy_resumes_and_the_copy_verifies(tmp_path, endpoints):
    main, offsite = endpoints
    primary_bucket, copy_bucket = main.bucket("primary"), offsite.bucket("offsite")
    # the copy's endpoint stops answering at its third pack: killed there, whatever the
    # machine's speed (polling moto for the packs while the copy ran cost more CPU than the copy)
    proxy = StallProxy(offsite.url)
    proxy.hang_from, proxy.hang_after = f"PUT /{copy_bucket}/repo/data/", 2
    setup = make_setup(
        tmp_path,
        (f"s3://{primary_bucket}/repo", main.url),
        (f"s3://{copy_bucket}/repo", proxy.endpoint),
        copy_extra={"workers": 1},
        drill=False,
    )
    for round_ in range(3):  # three snapshots, each with its own packs and index
        fill(setup.source, 3, 50_000, f"r{round_}")
        setup.run("backup", "config")
    total = len(setup.json("snapshots"))
    client = boto3.client("s3", endpoint_url=offsite.url)

    def copied(prefix: str) -> int:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=copy_bucket, Prefix=f"repo/{prefix}")
        return sum(len(page.get("Contents", [])) for page in pages)

    try:
        proc = setup.popen("copy", "offsite", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: proxy.hanging or proc.poll() is not None, "the copy to reach its third pack")
        assert proc.poll() is None, "the copy ended before it could be interrupted"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # killed among the packs: two of them copied, no snapshot copied ahead of its data
        assert copied("data/") == 2 and copied("snapshots/") == 0
        proxy.forward_normally()
        assert len(setup.json("snapshots", "--repository", "offsite")) == 0

        resumed = setup.json("copy", "offsite")
        assert resumed["already_there"] >= 2 and resumed["copied"]["snapshots"] == total
        assert len(setup.json("snapshots", "--repository", "offsite")) == total
        assert "no problems found" in setup.run("check", "--read-data", "--repository", "offsite").stdout
    finally:
        proxy.close()


def test_a_damaged_pack_is_not_spread_to_the_copy(tmp_path, endpoints):
    _, offsite = endpoints
    bucket = offsite.bucket("offsite")
    setup = make_setup(
        tmp_path, (f"file://{tmp_path / 'repo'}", ""), (f"s3://{bucket}/copy", offsite.url), drill=False
    )
    fill(setup.source, 2, 50_000, "a")
    setup.run("backup", "config")
    pack = next((tmp_path / "repo" / "data").rglob("*/*"))
    pack.chmod(0o644)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit: bit rot on the primary's disk
    pack.write_bytes(bytes(data))

    proc = setup.run("copy", "offsite", check=False)
    assert proc.returncode != 0 and f"{pack.name} in file://" in proc.stderr and "damaged" in proc.stderr
    assert "Traceback" not in proc.stderr
    # nothing that would reference the damaged data reached the copy
    assert setup.json("snapshots", "--repository", "offsite") == []


def test_a_locked_copy_keeps_reused_packs_locked_as_long_as_its_newest_snapshot(tmp_path, endpoints):
    main, offsite = endpoints
    primary_bucket, copy_bucket = main.bucket("primary"), offsite.bucket("offsite")
    setup = make_setup(
        tmp_path,
        (f"s3://{primary_bucket}/repo", main.url),
        (f"s3://{copy_bucket}/repo", offsite.url),
        copy_extra={"lock_days": 1, "trust_endpoint": True},  # moto: no probe of its Object Lock
        drill=False,
    )
    fill(setup.source, 2, 100_000, "a")
    setup.run("backup", "config")
    first = setup.json("copy", "offsite")
    assert first["retention_extended"] == 0  # fresh objects: locked as they were written
    # the copy's retention is raised (as after a policy change); the next snapshot reuses the
    # first one's pack, which is locked for one day only: the copy must extend it
    setup.policy.write_text(setup.policy.read_text().replace("lock_days = 1", "lock_days = 3"))
    fill(setup.source, 1, 100_000, "b")
    setup.run("backup", "config")
    second = setup.json("copy", "offsite")
    assert second["retention_extended"] >= first["copied"]["packs"]
    proc = setup.run("check", "--repository", "offsite", "--json", check=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["ok"], report["problems"]
    client = boto3.client("s3", endpoint_url=offsite.url)
    for v in client.list_object_versions(Bucket=copy_bucket, Prefix="repo/data/")["Versions"]:
        head = client.head_object(Bucket=copy_bucket, Key=v["Key"], VersionId=v["VersionId"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        # at least as long as the newest snapshot copied with lock_days = 3
        assert (head["ObjectLockRetainUntilDate"] - v["LastModified"]).days >= 2
