"""The local audit log compared with its signed copies: each kind of tampering is named."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lifeboat.audit import AuditLog, verify
from lifeboat.crypto.audit_anchor import (
    RECOVERY_SIDE,
    Anchored,
    Finding,
    Problem,
    anchor,
    compare,
    entry_hash,
    read_anchor,
)
from lifeboat.crypto.writers import Authorisation, Refusal, Registry, RootKey, WriterKey, issue_writer

HOST = socket.gethostname()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Repo:
    """The repository's audit/ prefix: what the mirror wrote, signed by the writer."""

    def __init__(self, signer: WriterKey | RootKey) -> None:
        self.signer = signer
        self.objects: dict[str, bytes] = {}

    def mirror(self, _name: str, line: bytes) -> None:
        name, stored = anchor(line, self.signer)
        self.objects[name] = stored

    def verified(self, registry: Registry) -> list[Anchored]:
        out = []
        for name, stored in self.objects.items():
            item = read_anchor(name, stored, registry, datetime.now(UTC))
            assert isinstance(item, Anchored), item
            out.append(item)
        return out


@pytest.fixture
def setup(root: RootKey, tmp_path: Path) -> tuple[Path, Repo, Registry]:
    writer, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    repo = Repo(writer)
    path = tmp_path / "audit.log"
    log = AuditLog(path, mirror=repo.mirror)
    for n in range(5):
        log.append("backup", asset="maindb", run=n)
    return path, repo, signed.verify(root.public)


def test_intact_log_matches_its_anchors(setup: tuple[Path, Repo, Registry]) -> None:
    path, repo, registry = setup
    assert compare(path.read_bytes(), repo.verified(registry), HOST) == []


def test_deleted_last_line_is_named(setup: tuple[Path, Repo, Registry]) -> None:
    path, repo, registry = setup
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))
    assert verify(path).ok, "the local chain alone looks fine"
    assert compare(path.read_bytes(), repo.verified(registry), HOST) == [Finding(Problem.TAIL_MISSING, 4, 1)]


def test_truncated_log_is_named(setup: tuple[Path, Repo, Registry]) -> None:
    path, repo, registry = setup
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # cut inside the last line
    findings = compare(path.read_bytes(), repo.verified(registry), HOST)
    assert findings == [Finding(Problem.PARTIAL_LINE, 4), Finding(Problem.TAIL_MISSING, 4, 1)]


def _rewrite_from(path: Path, start: int) -> None:
    """What an attacker with the state dir does: edit an entry, recompute every hash after it."""
    entries = [json.loads(line) for line in path.read_bytes().splitlines()]
    entries[start]["outcome"] = "failed"
    for i in range(start, len(entries)):
        entries[i]["prev"] = entries[i - 1]["hash"] if i else "0" * 64
        entries[i]["hash"] = entry_hash(entries[i])
    path.write_bytes(b"".join(json.dumps(e, sort_keys=True).encode() + b"\n" for e in entries))


def test_chain_rewritten_with_recomputed_hashes_is_named(setup: tuple[Path, Repo, Registry]) -> None:
    path, repo, registry = setup
    _rewrite_from(path, 2)
    assert verify(path).ok, "the rewritten chain verifies on its own"
    assert compare(path.read_bytes(), repo.verified(registry), HOST) == [Finding(Problem.REWRITTEN, 2, 3)]


def test_whole_chain_rewritten_is_named(setup: tuple[Path, Repo, Registry]) -> None:
    path, repo, registry = setup
    _rewrite_from(path, 0)
    assert compare(path.read_bytes(), repo.verified(registry), HOST) == [Finding(Problem.REWRITTEN, 0, 5)]


def test_missing_local_log_is_named(setup: tuple[Path, Repo, Registry]) -> None:
    _, repo, registry = setup
    findings = compare(None, repo.verified(registry), HOST)
    assert findings == [Finding(Problem.MISSING_LOCAL, 0, 5)]
    assert str(findings[0]) == "the local audit log is missing from seq 0 (5 entries)"


def test_entries_never_anchored_are_named(setup: tuple[Path, Repo, Registry]) -> None:
    path, repo, registry = setup
    AuditLog(path).append("forget", asset="maindb")  # no mirror: the repository never saw it
    assert compare(path.read_bytes(), repo.verified(registry), HOST) == [Finding(Problem.UNANCHORED, 5, 1)]


def test_anchor_signed_by_an_unregistered_key_is_refused(root: RootKey, tmp_path: Path) -> None:
    _, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    outsider, _ = issue_writer(root, "db1", ["maindb"], at=T0)
    forged = Repo(outsider)
    AuditLog(tmp_path / "a.log", mirror=forged.mirror).append("backup")
    ((name, stored),) = forged.objects.items()
    verdict = read_anchor(name, stored, signed.verify(root.public), datetime.now(UTC))
    assert isinstance(verdict, Authorisation) and verdict.refusal is Refusal.UNKNOWN_WRITER


def test_recovery_side_entries_are_signed_by_the_root(root: RootKey, tmp_path: Path) -> None:
    _, signed = issue_writer(root, "db1", ["maindb"], at=T0)
    repo = Repo(root)
    AuditLog(tmp_path / "r.log", mirror=repo.mirror).append("restore", asset="maindb")
    (item,) = repo.verified(signed.verify(root.public))
    assert item.signer == RECOVERY_SIDE
    ((name, stored),) = repo.objects.items()
    renamed = name[:-1] + ("1" if name.endswith("0") else "0")  # a valid copy under another name
    moved = read_anchor(renamed, stored, signed.verify(root.public), T0 + timedelta(1))
    assert isinstance(moved, Authorisation) and not moved
