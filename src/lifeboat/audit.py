"""The audit log: one JSON line per operation, each chained to the previous by SHA-256.

Appends take an exclusive ``flock`` so concurrent processes keep a single chain. Each
line is also mirrored into the repository (``audit/<seq>-<hash>``) when a mirror is
given, so deleting the local file does not erase history.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lifeboat.private import private_dir, private_opener

GENESIS = "0" * 64
SECRET_WORDS = ("secret", "passphrase", "password", "share", "mnemonic", "key_material", "private")

Mirror = Callable[[str, bytes], None]


def redact(details: dict[str, Any]) -> dict[str, Any]:
    """Drop values whose key names say they are secret; audit entries never hold secrets."""
    clean: dict[str, Any] = {}
    for key, value in details.items():
        if any(word in key.lower() for word in SECRET_WORDS) and not key.lower().endswith(
            ("_count", "_names")
        ):
            clean[key] = "[redacted]"
        elif isinstance(value, dict):
            clean[key] = redact(value)
        else:
            clean[key] = value
    return clean


def _entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def default_actor() -> str:
    actor = os.environ.get("LIFEBOAT_ACTOR")
    if actor:
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass
class AuditEntry:
    data: dict[str, Any]
    mirrored: bool = False


class AuditLog:
    def __init__(self, path: Path, mirror: Mirror | None = None) -> None:
        self.path = path
        self.mirror = mirror

    def append(
        self,
        operation: str,
        *,
        asset: str | None = None,
        outcome: str = "ok",
        actor: str | None = None,
        **details: Any,
    ) -> AuditEntry:
        private_dir(self.path.parent, tighten=False)
        with open(self.path, "a+b", opener=private_opener) as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.seek(0)
                last = _last_line(fh.read())
                prev_seq, prev_hash = -1, GENESIS
                if last:
                    try:
                        prev = json.loads(last)
                        prev_seq, prev_hash = int(prev["seq"]), str(prev["hash"])
                    except (ValueError, KeyError, TypeError):
                        prev_hash = hashlib.sha256(last).hexdigest()
                entry: dict[str, Any] = {
                    "seq": prev_seq + 1,
                    "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "actor": actor or default_actor(),
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "operation": operation,
                    "asset": asset,
                    "outcome": outcome,
                    "details": redact(details),
                    "prev": prev_hash,
                }
                entry["hash"] = _entry_hash(entry)
                line = json.dumps(entry, sort_keys=True, default=str).encode() + b"\n"
                fh.seek(0, os.SEEK_END)
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        result = AuditEntry(entry)
        if self.mirror is not None:
            try:
                self.mirror(f"audit/{entry['seq']:012d}-{entry['hash'][:16]}", line)
                result.mirrored = True
            except Exception:
                result.mirrored = False
        return result

    def recorded_by(self, pid: int, operation: str, asset: str | None = None) -> bool:
        """Whether process ``pid`` (of this host) logged ``operation`` on ``asset``: a child
        stopped before it got that far leaves it to its parent."""
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return False
        host = socket.gethostname()
        for line in reversed(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if (entry.get("pid"), entry.get("host"), entry.get("operation"), entry.get("asset")) == (
                pid,
                host,
                operation,
                asset,
            ):
                return True
        return False


def _last_line(data: bytes) -> bytes:
    lines = data.rstrip(b"\n").rsplit(b"\n", 1)
    return lines[-1] if lines and lines[-1] else b""


@dataclass
class AuditReport:
    ok: bool
    entries: int
    first_bad_line: int | None = None
    problem: str | None = None
    operations: dict[str, int] = field(default_factory=dict)


def verify(path: Path) -> AuditReport:
    """Walk the chain: every line's hash, its link to the previous line, and the sequence."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return AuditReport(ok=False, entries=0, problem=f"audit log {path} does not exist")
    prev_hash, prev_seq = GENESIS, -1
    ops: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        try:
            entry = json.loads(raw)
            seq, recorded = int(entry["seq"]), str(entry["hash"])
        except (ValueError, KeyError, TypeError):
            return AuditReport(False, number - 1, number, f"line {number} is not a valid audit entry")
        if _entry_hash(entry) != recorded:
            return AuditReport(
                False, number - 1, number, f"line {number} was edited (its hash does not match)"
            )
        if seq != prev_seq + 1:
            if seq > prev_seq + 1:
                problem = f"line {number}: entries missing (seq jumps {prev_seq} -> {seq})"
            else:
                problem = f"line {number}: lines out of order (seq {seq} after {prev_seq})"
            return AuditReport(False, number - 1, number, problem)
        if entry.get("prev") != prev_hash:
            return AuditReport(
                False, number - 1, number, f"line {number} does not chain to line {number - 1}"
            )
        prev_hash, prev_seq = recorded, seq
        ops[entry.get("operation", "?")] = ops.get(entry.get("operation", "?"), 0) + 1
    return AuditReport(True, len(lines), operations=ops)
