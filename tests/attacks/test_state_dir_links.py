"""A malicious insider with the state dir (issue #14) plants symbolic links where lifeboat
writes its own files: the audit log it appends to (and reads back), and the temporary name
a cache is written under before it replaces the old one (``.name.tmp<pid>``: predictable).
lifeboat often runs as root, so a link followed would append to, or overwrite, any file on
the host. The link is refused (the audit log, with one error line) or removed (the
temporary name); the file it points at is untouched either way."""

from __future__ import annotations

import os
from pathlib import Path

from lifeboat.private import write_private
from tests.harness import LifeboatCli, PolicyBuilder

VICTIM_TEXT = "root:$6$canary-hash:19000:0:99999:7:::\n"


def test_a_link_planted_for_the_audit_log_is_refused_not_followed(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a\n")
    state = tmp_path / "state"
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .state(state)
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 2})
        .files("docs", [tmp_path / "data"])
        .write(tmp_path / "lifeboat.toml")
    )
    cli = LifeboatCli(policy=policy, cwd=tmp_path)
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    victim = tmp_path / "shadow"
    victim.write_text(VICTIM_TEXT)

    # the insider: the audit log swapped for a link to a file outside the state dir
    (state / "audit.jsonl").unlink()
    (state / "audit.jsonl").symlink_to(victim)
    proc = cli.run("backup", "docs", check=False)
    assert proc.returncode != 0
    assert f"{state / 'audit.jsonl'} is a symbolic link" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert victim.read_text() == VICTIM_TEXT  # neither appended to nor rewritten

    # control: the insider's link removed, the same backup records its entry
    (state / "audit.jsonl").unlink()
    assert cli.run("backup", "docs").returncode == 0
    assert '"operation": "backup"' in (state / "audit.jsonl").read_text()


def test_a_link_planted_at_a_caches_temporary_name_is_removed_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "shadow"
    victim.write_text(VICTIM_TEXT)
    cache = tmp_path / "state" / "cache" / "refs.json"
    cache.parent.mkdir(parents=True)
    planted = cache.with_name(f".{cache.name}.tmp{os.getpid()}")  # the name the writer will use
    planted.symlink_to(victim)
    write_private(cache, b'{"refs": []}')
    assert victim.read_text() == VICTIM_TEXT
    assert cache.read_bytes() == b'{"refs": []}' and not cache.is_symlink()
    assert (cache.stat().st_mode & 0o777) == 0o600
    assert not planted.exists() and not planted.is_symlink()
