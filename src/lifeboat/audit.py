"""The audit log: one JSON line per operation, each chained to the previous by SHA-256.

Appends take an exclusive ``flock`` so concurrent processes keep a single chain. Each
line is also anchored in the repository (``audit/<seq>-<hash>``, signed: repo/audit_copies.py)
when a mirror is given, so cutting, rewriting or deleting the local file is caught by
``audit verify``. Anchoring goes in sequence order from a watermark kept next to the log
(``audit.anchored.json``): an entry logged without a repository (or whose copy failed) is
anchored by the next operation that has one. A failed copy never fails the operation; it is
logged once (``audit-anchor``, failed) and ``status`` reports it until a later copy works.

``actor`` is the signed identity that logs (the writer's name from the registry, or
``recovery side`` for the root key) whenever one is known; the free-text user
(``LIFEBOAT_ACTOR``, else user@host) is kept as ``operator``.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lifeboat.errors import ConfigError, LifeboatError
from lifeboat.private import private_dir, private_opener, write_private

GENESIS = "0" * 64
SECRET_WORDS = ("secret", "passphrase", "password", "share", "mnemonic", "key_material", "private")

Mirror = Callable[[str, bytes], None]
Identity = Callable[[], str | None]
ANCHOR_STATE = "audit.anchored.json"
ANCHOR_OPERATION = "audit-anchor"


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


@dataclass(frozen=True)
class AnchorState:
    """How far the local log is anchored in the repository, and the last failure, if any."""

    through: int = -1  # every entry up to this seq has its signed copy
    error: str | None = None  # why the last copy failed (None: the last attempt worked)
    failed_seq: int | None = None
    since: str | None = None  # when copies started failing
    hash: str | None = None  # the hash of entry ``through``: a log replaced since is copied again

    def to_json(self) -> dict[str, Any]:
        return {
            "through": self.through,
            "hash": self.hash,
            "error": self.error,
            "failed_seq": self.failed_seq,
            "since": self.since,
        }


def read_log(path: Path) -> bytes:
    """The audit log's bytes, read as it is written: only a regular file, never through a
    link planted in the state dir, never a FIFO that would hold the reader up (ConfigError
    naming it; FileNotFoundError when there is none)."""
    with open(path, "rb", opener=private_opener) as fh:
        return fh.read()


def anchor_state_path(log: Path) -> Path:
    return log.with_name(ANCHOR_STATE)


def read_anchor_state(log: Path) -> AnchorState:
    """The anchoring watermark of the log at ``log`` (nothing anchored when unreadable; a
    link or FIFO planted there is a ConfigError naming it, as at the log itself)."""
    try:
        with open(anchor_state_path(log), "rb", opener=private_opener) as fh:
            data = json.loads(fh.read())
        return AnchorState(
            int(data["through"]),
            data.get("error"),
            data.get("failed_seq"),
            data.get("since"),
            data.get("hash"),
        )
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return AnchorState()


def anchoring_problem(log: Path) -> str | None:
    """Why entries of the log at ``log`` wait for their signed copy (None: the last copy
    worked); what `status` and the daemon's alerts say."""
    state = read_anchor_state(log)
    if state.error is None:
        return None
    return (
        f"audit entries from seq {state.failed_seq} have no signed copy in the repository "
        f"since {state.since}: {state.error} (retried at the next operation)"
    )


class AuditLog:
    def __init__(self, path: Path, mirror: Mirror | None = None, identity: Identity | None = None) -> None:
        self.path = path
        self.mirror = mirror
        self.identity = identity
        self._who: tuple[str | None] | None = None

    def _writer(self) -> str | None:
        if self._who is None:
            try:
                self._who = (self.identity() if self.identity else None,)
            except Exception:  # an identity that cannot be established is not a failed operation
                self._who = (None,)
        return self._who[0]

    def append(
        self,
        operation: str,
        *,
        asset: str | None = None,
        outcome: str = "ok",
        actor: str | None = None,
        **details: Any,
    ) -> AuditEntry:
        entry = self._append(operation, asset, outcome, actor, details)
        result = AuditEntry(entry)
        if self.mirror is not None:
            result.mirrored = self.anchor_pending() >= int(entry["seq"])
        return result

    def _append(
        self, operation: str, asset: str | None, outcome: str, actor: str | None, details: dict[str, Any]
    ) -> dict[str, Any]:
        writer = self._writer()
        operator = actor or default_actor()
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
                    "actor": writer or operator,
                    "writer": writer,
                    "operator": operator,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "operation": operation,
                    "asset": asset,
                    "outcome": outcome,
                    "details": redact(details),
                    "prev": prev_hash,
                    # the hash (and so the copy's name in the repository) must not let the
                    # storage provider guess an entry: little else in it is unknown
                    "nonce": secrets.token_hex(16),
                }
                entry["hash"] = _entry_hash(entry)
                line = json.dumps(entry, sort_keys=True, default=str).encode() + b"\n"
                fh.seek(0, os.SEEK_END)
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return entry

    def anchor_pending(self) -> int:
        """Copy every entry past the watermark into the repository, in sequence order,
        stopping at the first failure (kept for the next operation). Returns the new
        watermark. Never raises: a failed copy must not fail the operation it records."""
        try:
            state = read_anchor_state(self.path)
        except LifeboatError:
            return -1  # a link or FIFO planted where the watermark is kept: status names it
        if self.mirror is None:
            return state.through
        if not os.access(anchor_state_path(self.path), os.R_OK) and anchor_state_path(self.path).exists():
            return -1  # another user's watermark: left to the processes that can read it
        try:
            lines = read_log(self.path).splitlines(keepends=True)
        except (OSError, LifeboatError):
            return state.through
        pending, found = _past(lines, state.through, state.hash)
        if not found:  # the log was cut, replaced or deleted: copy it all again (copies
            state = AnchorState()  # already stored are kept; `audit verify` names the change)
            pending, _ = _past(lines, -1, None)
        through, last_hash, failure = state.through, state.hash, None
        for seq, raw in pending:
            try:
                self.mirror(f"audit/{seq:012d}-{_line_hash(raw)[:16]}", raw)
            except Exception as exc:  # storage down, key refused: the operation goes on
                failure = (seq, _one_line(exc))
                break
            through, last_hash = seq, _line_hash(raw)
        self._save_state(state, AnchorState(through, hash=last_hash), failure)
        return through

    def _save_state(self, old: AnchorState, done: AnchorState, failure: tuple[int, str] | None) -> None:
        if failure is None:
            new = done
        else:
            since = old.since or datetime.now(UTC).isoformat(timespec="seconds")
            new = AnchorState(done.through, failure[1], failure[0], since, done.hash)
        if new == old:
            return
        try:
            # root writing a log PostgreSQL's user owns (it pushes WAL): the watermark is theirs
            # too, given before it takes its name (a chown by name could follow a link swapped in)
            log = self.path.stat()
            owner = (log.st_uid, log.st_gid) if os.geteuid() == 0 and log.st_uid != 0 else None
            write_private(anchor_state_path(self.path), json.dumps(new.to_json()).encode(), owner=owner)
        except (OSError, ConfigError):
            return
        if failure is not None and old.error is None:
            # the failure is history too; it is anchored itself once copies work again
            details = {"pending_from": failure[0], "error": failure[1]}
            self._append(ANCHOR_OPERATION, None, "failed", None, details)

    def recorded_by(self, pid: int, operation: str, asset: str | None = None) -> bool:
        """Whether process ``pid`` (of this host) logged ``operation`` on ``asset``: a child
        stopped before it got that far leaves it to its parent."""
        try:
            lines = read_log(self.path).splitlines()
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


def _past(lines: list[bytes], through: int, through_hash: str | None) -> tuple[list[tuple[int, bytes]], bool]:
    """The complete lines after seq ``through``, oldest first, read from the end (an
    append copies one or two lines, whatever the log's length); none after a damaged line
    (`audit verify` names it). Also whether entry ``through`` is still the one copied last
    (False: the log was cut or replaced since)."""
    found: list[tuple[int, bytes]] = []
    for raw in reversed(lines):
        try:
            entry = json.loads(raw)
            seq = int(entry["seq"])
        except (ValueError, KeyError, TypeError):
            found.clear()
            if raw.endswith(b"\n"):
                return [], True  # a damaged line: nothing after it is copied
            continue  # the last line, still being written by another process
        if seq <= through:
            still = seq == through and (through_hash is None or entry.get("hash") == through_hash)
            return list(reversed(found)), still
        if raw.endswith(b"\n"):
            found.append((seq, raw))
    return list(reversed(found)), through < 0


def _line_hash(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["hash"])
    except (ValueError, KeyError, TypeError):
        return hashlib.sha256(raw).hexdigest()


def _one_line(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return str(message).splitlines()[0][:200] if str(message) else type(exc).__name__


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
        lines = read_log(path).splitlines()
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
