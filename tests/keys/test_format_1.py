"""A repository written before signed writers (format 1, as `init` wrote it at bac0b97: a
config without `root_public`, no writer registry, a backup key file without a writer
identity). Any of its backup key files could forge its history, so every command refuses it
with one line and a hint instead of reading it as if it were trustworthy."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifeboat.crypto.envelope import wrap_key
from lifeboat.crypto.keys import RecoveryKey, new_backup_key
from tests.harness import LifeboatCli, PolicyBuilder

REFUSAL = "lifeboat: error: repository format 1 predates signed writers"


def write_format_1(repo: Path, keys: Path) -> None:
    """The repository, backup key and recovery key `init` wrote before writer identities."""
    repo_id = secrets.token_hex(16)
    recovery = RecoveryKey.generate(repo_id)
    id_key = secrets.token_bytes(32)
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    config = {
        "version": 1,
        "id": repo_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "recovery_public": b64(recovery.public),
        "recovery_fingerprint": recovery.fingerprint(),
        "id_key_wrapped": b64(wrap_key(recovery.public, id_key, b"id-key")),
        "chunk_size": 1 << 20,
        "pack_size": 8 << 20,
        "lock_days": None,
        "suite": "aes-256-gcm",
    }
    (repo / "records" / "keys").mkdir(parents=True)
    (repo / "config").write_text(json.dumps(config, indent=2))
    key = new_backup_key(repo_id, recovery.public, id_key)
    record = {"key_id": key.key_id, "created": key.created, "status": "active"}
    (repo / "records" / "keys" / f"{key.key_id}.json").write_text(json.dumps(record))
    keys.mkdir()
    key.save(keys / "backup.key")
    recovery.save(keys / "recovery.key")


@pytest.fixture
def old(tmp_path: Path) -> LifeboatCli:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "app.conf").write_text("port = 1\n")
    write_format_1(tmp_path / "repo", tmp_path / "keys")
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}", recovery_key="keys/recovery.key")
        .data_class("standard", rpo="1d", rto="1h")
        .files("app", [tmp_path / "etc"])
        .write(tmp_path / "lifeboat.toml")
    )
    return LifeboatCli(policy=policy, cwd=tmp_path)


@pytest.mark.parametrize(
    "command",
    [
        ("backup", "app"),
        ("snapshots",),
        ("check",),
        ("status",),
        ("restore", "app", "--target", "out"),
        ("keys", "rotate", "--recovery-key", "keys/recovery.key"),
        ("keys", "writers"),
    ],
)
def test_every_command_refuses_a_format_1_repository_in_one_line(
    old: LifeboatCli, command: tuple[str, ...]
) -> None:
    before = sorted(p.name for p in (old.cwd or Path()).joinpath("repo").rglob("*"))
    proc = old.run(*command, check=False)
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(REFUSAL), proc.stderr
    assert lines[1].startswith("hint: ") and "lifeboat init" in lines[1] and len(lines) == 2
    assert (
        sorted(p.name for p in (old.cwd or Path()).joinpath("repo").rglob("*")) == before
    )  # nothing written
