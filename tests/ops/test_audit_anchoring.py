"""Audit entries reach the repository as signed copies: a copy that fails does not fail the
operation, is logged, named by `status`, and made by the next operation; on an Object Lock
bucket the copies are locked like every other object."""

from __future__ import annotations

import json
import os

import boto3
import botocore.exceptions
import pytest

from tests.cli.conftest import Cli, write_policy


def _entries(cli: Cli) -> list[dict[str, object]]:
    return [json.loads(line) for line in (cli.root / ".lifeboat" / "audit.jsonl").read_text().splitlines()]


def _warnings(cli: Cli) -> list[str]:
    return list(json.loads(cli.run("status", "--json", check=False).stdout)["warnings"])


@pytest.fixture
def file_cli(tmp_path, clock) -> Cli:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("a\n")
    policy = write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}")
    cli = Cli(policy=policy, clock=clock, root=tmp_path, source=source)
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    return cli


def test_a_failed_copy_is_logged_reported_and_made_by_the_next_operation(file_cli: Cli) -> None:
    cli = file_cli
    audit_dir = cli.root / "repo" / "audit"
    os.rename(audit_dir, cli.root / "audit-away")
    audit_dir.write_text("not a directory\n")  # the repository refuses every audit copy

    assert cli.run("backup").returncode == 0  # the backup itself is unaffected
    entries = _entries(cli)
    last = [(e["operation"], e["outcome"]) for e in entries[-2:]]
    assert last == [("backup", "ok"), ("audit-anchor", "failed")]
    [warning] = [w for w in _warnings(cli) if "no signed copy" in w]
    assert "from seq 1" in warning and "retried at the next operation" in warning

    audit_dir.unlink()
    os.rename(cli.root / "audit-away", audit_dir)
    proc = cli.run("audit", "verify", "--json", check=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and [f["problem"] for f in report["findings"]] == ["unanchored"]
    assert report["findings"][0]["seq"] == 1

    cli.run("backup")  # copies what waited, in order, then its own entry
    assert cli.run("audit", "verify").returncode == 0
    assert not [w for w in _warnings(cli) if "no signed copy" in w]
    assert len(list(audit_dir.iterdir())) == len(_entries(cli))


def test_copies_are_under_object_lock(tmp_path, seaweed, make_seaweed_bucket) -> None:
    bucket = make_seaweed_bucket()
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("a\n")
    policy = write_policy(tmp_path, source, f"s3://{bucket}/lb", endpoint_url=seaweed.endpoint, lock_days=1)
    cli = Cli(policy=policy, root=tmp_path, source=source)
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    cli.run("backup")

    client = boto3.client("s3", endpoint_url=seaweed.endpoint)
    copies = client.list_object_versions(Bucket=bucket, Prefix="lb/audit/")["Versions"]
    assert len(copies) == len(_entries(cli)) == 2
    for copy in copies:
        retention = client.get_object_retention(Bucket=bucket, Key=copy["Key"], VersionId=copy["VersionId"])
        assert retention["Retention"]["Mode"] == "COMPLIANCE"
        with pytest.raises(botocore.exceptions.ClientError):
            client.delete_object(Bucket=bucket, Key=copy["Key"], VersionId=copy["VersionId"])
    (tmp_path / ".lifeboat" / "audit.jsonl").unlink()  # the insider's move: the copies remain
    proc = cli.run("audit", "verify", check=False)
    assert proc.returncode == 1 and "the local audit log is missing" in proc.stdout


def test_recovery_side_entries_are_signed_by_the_root_key(file_cli: Cli, tmp_path) -> None:
    """A restore host holding only the recovery key: its entries' copies carry the root
    key's signature, `actor` says so, and its log verifies with the recovery key alone."""
    file_cli.run("backup")
    host = tmp_path / "restore-host"
    host.mkdir()
    policy = write_policy(host, file_cli.source, f"file://{tmp_path / 'repo'}")
    recovery = Cli(policy=policy, clock=file_cli.clock, root=host, source=file_cli.source)
    key = ["--recovery-key", str(tmp_path / "recovery.key")]
    assert not (host / "keys" / "backup.key").exists()
    recovery.run("restore", "config", "--target", str(host / "restored"), *key)

    entries = _entries(recovery)
    assert [e["operation"] for e in entries] == ["key-access", "restore"]
    # the key's use is logged before any key opened (by the operator); the restore by the
    # identity that signs; both copies carry the root key's signature
    assert entries[0]["writer"] is None and entries[1]["actor"] == entries[1]["writer"] == "recovery side"
    report = json.loads(recovery.run("audit", "verify", "--json", *key).stdout)
    assert report["ok"] and report["signer"] == "recovery side" and report["anchored"] >= 4
    # the backup host's log is untouched by the restore host's entries
    assert file_cli.run("audit", "verify").returncode == 0
