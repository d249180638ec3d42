"""The files asset through the CLI: backup, snapshots, restore, check, retention, crashes."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

CANARY = "CANARY-files-0b7e4d2a"


def fill(source: Path, n: int = 50, size: int = 40_000) -> None:
    rng = random.Random(n)
    for i in range(n):
        (source / f"file-{i:03d}.bin").write_bytes(rng.randbytes(size))
    (source / "secret.txt").write_text(f"password={CANARY}\n")


def test_backup_restore_round_trip_and_json(cli):
    fill(cli.source)
    out = json.loads(cli.run("backup", "config", "--json").stdout)
    assert out[0]["ok"] and out[0]["stats"]["files"] == 51
    snaps = json.loads(cli.run("snapshots", "--json").stdout)
    assert [s["id"] for s in snaps] == [out[0]["snapshot"]]
    target = cli.root / "restored"
    cli.run("restore", "config", "--target", str(target), "--recovery-key", str(cli.root / "recovery.key"))
    for path in cli.source.iterdir():
        assert (target / "source" / path.name).read_bytes() == path.read_bytes()
    again = cli.run(
        "restore",
        "config",
        "--target",
        str(target),
        "--recovery-key",
        str(cli.root / "recovery.key"),
        check=False,
    )
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr
    assert cli.run("check", "--read-data", "--recovery-key", str(cli.root / "recovery.key")).returncode == 0


def test_canary_absent_from_logs_audit_and_json(cli):
    fill(cli.source, n=3)
    outputs = [
        cli.run("backup", "--json").stdout,
        cli.run("snapshots", "--json").stdout,
        cli.run("check", "--json").stdout,
    ]
    for proc in [
        cli.run(
            "restore",
            "config",
            "--target",
            str(cli.root / "r"),
            "--json",
            "--recovery-key",
            str(cli.root / "recovery.key"),
        )
    ]:
        outputs += [proc.stdout, proc.stderr]
    audit = (cli.root / ".lifeboat" / "audit.jsonl").read_text()
    assert audit.count("\n") >= 4
    for text in [*outputs, audit]:
        assert CANARY not in text


def test_wrong_or_missing_recovery_key_is_one_line_error(cli, tmp_path):
    fill(cli.source, n=2)
    cli.run("backup")
    bad = tmp_path / "bad.key"
    bad.write_text("{not json")
    for args in (["--recovery-key", str(bad)], ["--recovery-key", str(tmp_path / "missing.key")], []):
        proc = cli.run("restore", "config", "--target", str(tmp_path / "t"), *args, check=False)
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert lines[0].startswith("lifeboat: error:") and len(lines) <= 2, proc.stderr
        assert "Traceback" not in proc.stderr


def test_missing_keyfile_and_unreachable_endpoint(tmp_path):
    from tests.cli.conftest import cli_for, write_policy

    source = tmp_path / "src"
    source.mkdir()
    policy = write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}")
    proc = cli_for(policy, tmp_path, source).run("backup", check=False)
    assert proc.returncode == 2 and "backup key file" in proc.stderr and "Traceback" not in proc.stderr
    policy = write_policy(tmp_path, source, "s3://nowhere/x", endpoint_url="http://127.0.0.1:9")
    started = time.monotonic()
    proc = cli_for(policy, tmp_path, source).run(
        "init", "--recovery-key-out", str(tmp_path / "r.key"), check=False
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) <= 2
    assert time.monotonic() - started < 60


def _stored_bytes(repo: Path) -> int:
    """Bytes of the packs stored so far (temporary files come and go while we look)."""
    total = 0
    for root, _dirs, files in os.walk(repo / "data"):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.6])
def test_sigkill_during_backup_leaves_repository_consistent(tmp_path, fraction):
    from tests.cli.conftest import cli_for, write_policy

    source = tmp_path / "source"
    source.mkdir()
    rng = random.Random(3)
    for i in range(6):
        (source / f"big-{i}.bin").write_bytes(rng.randbytes(48 << 20))
    total = 6 * (48 << 20)
    policy = write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}")
    cli = cli_for(policy, tmp_path, source)
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    proc = cli.popen("backup", "config")
    # Killed once the repository holds a given share of the data: an event, not a delay, so
    # the kill always lands mid-backup (a snapshot needs every byte before it commits).
    deadline = time.monotonic() + 120
    while _stored_bytes(tmp_path / "repo") <= fraction * total:
        assert proc.poll() is None, "the backup finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    key = ["--recovery-key", str(tmp_path / "recovery.key")]
    assert json.loads(cli.run("snapshots", "--json").stdout) == []  # nothing half-visible
    check = cli.run("check", "--read-data", *key, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    uploaded = _stored_bytes(tmp_path / "repo")
    result = json.loads(cli.run("backup", "config", "--json").stdout)[0]
    assert result["ok"]
    # what was uploaded before the kill is reused, not sent again
    assert result["stats"]["new_bytes"] <= total - uploaded + (40 << 20)
    assert cli.run("check", "--read-data", *key).returncode == 0
    target = tmp_path / "restored"
    cli.run("restore", "config", "--target", str(target), *key)
    for path in source.iterdir():
        assert (target / "source" / path.name).read_bytes() == path.read_bytes()


def test_concurrent_backups_do_not_block_each_other(tmp_path):
    from tests.cli.conftest import cli_for, write_policy

    source = tmp_path / "source"
    source.mkdir()
    for i in range(4):
        (source / f"f{i}").write_bytes(os.urandom(8 << 20))
    policy = write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}")
    cli = cli_for(policy, tmp_path, source)
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    procs = [cli.popen("backup", "config") for _ in range(3)]
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 0, 0], [p.stderr.read() for p in procs if p.stderr]
    assert len(json.loads(cli.run("snapshots", "--json").stdout)) == 3
    assert cli.run("check", "--read-data", "--recovery-key", str(tmp_path / "recovery.key")).returncode == 0


def test_forget_and_prune_respect_retention(cli):
    key = ["--recovery-key", str(cli.root / "recovery.key")]
    for i in range(4):
        (cli.source / f"gen-{i}").write_bytes(os.urandom(300_000))
        cli.run("backup")
    dry = json.loads(cli.run("forget", "--dry-run", "--json", *key).stdout)
    told = cli.run("forget", "--dry-run", *key).stdout.splitlines()  # one line per snapshot, then the count
    assert [line.split()[:3] for line in told[:2]] == [["would", "forget", i[:12]] for i in dry["removed"]]
    assert told[2] == "2 kept, 2 to forget, 0 locked"
    out = json.loads(cli.run("forget", "--json", *key).stdout)
    assert len(out["kept"]) == 2 and len(out["removed"]) == 2
    cli.run("prune", *key)
    assert cli.run("check", "--read-data", *key).returncode == 0
    target = cli.root / "restored"
    cli.run("restore", "config", "--target", str(target), *key)
    assert sorted(p.name for p in (target / "source").iterdir()) == [f"gen-{i}" for i in range(4)]


def test_audit_verify_detects_an_edited_line(cli):
    fill(cli.source, n=2)
    cli.run("backup")
    cli.run("backup")
    assert cli.run("audit", "verify").returncode == 0
    path = cli.root / ".lifeboat" / "audit.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"outcome": "ok"', '"outcome": "failed"')
    path.write_text("\n".join(lines) + "\n")
    proc = cli.run("audit", "verify", check=False)
    assert proc.returncode == 1 and "line 2 was edited" in proc.stdout


def test_read_data_subsets_cover_every_pack_and_find_a_flipped_byte(cli):
    """Parts 1/3..3/3 read every pack exactly once; the damaged pack is reported by the
    part that holds it and by no other."""
    if not (cli.root / "repo").is_dir():
        pytest.skip("flips a byte in a pack file: the filesystem repository only")
    fill(cli.source, n=120, size=100_000)
    cli.run("backup", "config")
    key = ["--recovery-key", str(cli.root / "recovery.key")]
    packs = sorted(p for p in (cli.root / "repo" / "data").rglob("*") if p.is_file())
    assert len(packs) >= 2
    reads = [
        json.loads(cli.run("check", "--read-data-subset", f"{k}/3", "--json", *key).stdout)["packs_read"]
        for k in (1, 2, 3)
    ]
    assert sum(reads) == len(packs)
    victim = max(packs, key=lambda p: p.stat().st_size)  # file data, not the tree
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    results = [
        cli.run("check", "--read-data-subset", f"{k}/3", "--json", *key, check=False) for k in (1, 2, 3)
    ]
    failed = [r for r in results if r.returncode != 0]
    assert len(failed) == 1 and victim.name in failed[0].stdout
    bad = cli.run("check", "--read-data-subset", "4/3", *key, check=False)
    assert bad.returncode == 2 and "between 1 and T" in bad.stderr


@pytest.mark.parametrize("cli", ["file"], indirect=True)
def test_a_snapshot_dated_ahead_within_the_skew_is_no_credit_in_status(cli):
    fill(cli.source, n=2, size=100)
    with cli.clock.shifted(270):  # this host's clock 4.5 minutes ahead (within the 5 m allowed)
        cli.run("backup", "config")
    seen = json.loads(cli.run("status", "--json", check=False).stdout)
    [config] = [a for a in seen["assets"] if a["asset"] == "config"]
    assert config["exposure_s"] == 0  # before: about -270, an exposure better than none
