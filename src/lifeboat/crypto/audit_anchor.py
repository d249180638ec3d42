"""Audit entries anchored in the repository as signed objects, and the comparison that finds
a truncated, tail-deleted, rewritten or missing local log (issue #14).

The local audit log is a SHA-256 hash chain (audit.py), which catches an edited middle
line but not a cut tail or a chain rewritten with recomputed hashes: whoever can write the
file can recompute every hash. Each line is therefore also stored in the repository as
``audit/<seq, 12 digits>-<first 16 hex of its hash>`` = line ‖ 101-byte signature trailer
(crypto/signed.py, type ``audit``, no asset), signed by the writer that logged it or, for
recovery-side operations, by the root key. A rewritten local chain cannot produce those
signatures, and under Object Lock the anchored copies cannot be removed either.

Hashes are recomputed here with the same rule as audit.py (SHA-256 of the entry's
canonical JSON without ``hash``); crypto/ must not import ops/.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from lifeboat.crypto.signed import (
    SIGNATURE_MAGIC,
    SIGNATURE_SIZE,
    ObjectType,
    Signature,
    sign_by_root,
    sign_object,
    verify_by_root,
    verify_object,
)
from lifeboat.crypto.writers import Authorisation, Refusal, Registry, RootKey, WriterKey
from lifeboat.errors import IntegrityError

GENESIS = "0" * 64
RECOVERY_SIDE = "recovery side"
# where the signed copy goes when an unsigned copy (written before copies were signed)
# already holds the entry's name: the repository is put-once, so it cannot be replaced
SIGNED_SUFFIX = "~signed"


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def parse_entry(line: bytes) -> dict[str, Any]:
    try:
        entry = json.loads(line)
        int(entry["seq"]), str(entry["hash"])
    except (ValueError, KeyError, TypeError):
        raise IntegrityError("audit entry is damaged") from None
    if not isinstance(entry, dict) or entry_hash(entry) != entry["hash"]:
        raise IntegrityError("audit entry is damaged (its hash does not match)")
    return entry


def anchor_name(entry: dict[str, Any]) -> str:
    return f"audit/{int(entry['seq']):012d}-{str(entry['hash'])[:16]}"


def anchor(line: bytes, signer: WriterKey | RootKey) -> tuple[str, bytes]:
    """(name, stored bytes) of one local audit line as a signed repository object."""
    line = line.rstrip(b"\n")
    name = anchor_name(parse_entry(line))
    if isinstance(signer, RootKey):
        signature = sign_by_root(signer, ObjectType.AUDIT, name, line)
    else:
        signature = sign_object(signer, ObjectType.AUDIT, name, None, line)
    return name, line + signature.to_bytes()


@dataclass(frozen=True)
class Anchored:
    """An anchored entry whose signature checked out, and who signed it."""

    name: str
    entry: dict[str, Any]
    signer: str

    @property
    def seq(self) -> int:
        return int(self.entry["seq"])

    @property
    def hash(self) -> str:
        return str(self.entry["hash"])


def entry_time(line: bytes) -> datetime | None:
    """The time an entry claims (None when it has none a reader can parse)."""
    try:
        moment = datetime.fromisoformat(str(json.loads(line)["time"]))
    except (ValueError, KeyError, TypeError):
        return None
    return moment if moment.tzinfo is not None else None


def read_anchor(
    name: str, stored: bytes, registry: Registry, at_time: datetime | None = None
) -> Anchored | Authorisation:
    """The entry and its signer, or the refusal (reported, never used for comparison).

    ``at_time`` None: the writer is judged at the time the entry claims, so entries of a
    writer revoked since stay valid (a revocation dated at the suspected compromise is what
    refuses a stolen key's back-dated entries)."""
    if len(stored) <= SIGNATURE_SIZE or stored[-SIGNATURE_SIZE:][:4] != SIGNATURE_MAGIC:
        return Authorisation(None, Refusal.UNSIGNED)  # e.g. a bare line, as copies once were
    line, trailer = stored[:-SIGNATURE_SIZE], stored[-SIGNATURE_SIZE:]
    if at_time is None:
        at_time = entry_time(line)
        if at_time is None:
            return Authorisation(None, Refusal.MALFORMED)
    try:
        public = Signature.from_bytes(trailer).public
    except IntegrityError:
        return Authorisation(None, Refusal.MALFORMED)
    if public == registry.root_public:
        try:
            verify_by_root(registry.root_public, registry.repo_id, ObjectType.AUDIT, name, line, trailer)
        except IntegrityError:
            return Authorisation(RECOVERY_SIDE, Refusal.BAD_SIGNATURE)
        signer = RECOVERY_SIDE
    else:
        verdict = verify_object(registry, ObjectType.AUDIT, name, None, line, trailer, at_time)
        if not verdict:
            return verdict
        signer = str(verdict.writer)
    try:
        entry = parse_entry(line)
    except IntegrityError:
        return Authorisation(signer, Refusal.MALFORMED)
    if name not in (anchor_name(entry), anchor_name(entry) + SIGNED_SUFFIX):
        return Authorisation(signer, Refusal.BAD_SIGNATURE)
    return Anchored(name, entry, signer)


# --- comparing the local log with the anchored copies -------------------------------------


class Problem(StrEnum):
    MISSING_LOCAL = "the local audit log is missing"
    PARTIAL_LINE = "the local audit log ends in a cut line (truncated)"
    TAIL_MISSING = "entries at the end of the local log were deleted or truncated"
    REWRITTEN = "the local log differs from the signed copies (rewritten)"
    UNANCHORED = "local entries have no signed copy in the repository"
    REPLACED = "an earlier log of this host has signed copies the local log lacks (replaced)"
    REFUSED = "audit copies in the repository are not signed by this repository's writers"


@dataclass(frozen=True)
class Finding:
    problem: Problem
    seq: int | None
    count: int = 1

    def __str__(self) -> str:
        where = f" from seq {self.seq}" if self.seq is not None else ""
        return f"{self.problem.value}{where} ({self.count} entr{'y' if self.count == 1 else 'ies'})"


def _local_entries(local: bytes) -> list[dict[str, Any]]:
    entries = []
    for raw in local.splitlines():
        try:
            entries.append(parse_entry(raw))
        except IntegrityError:
            break  # audit.verify names the bad line; compare what precedes it
    return entries


def _reachable(roots: Sequence[Anchored], anchored: Sequence[Anchored]) -> list[Anchored]:
    """Every anchored entry that descends from ``roots`` by ``prev`` links, forks included
    (a tail deleted and then written again leaves two entries after one predecessor)."""
    children: dict[str, list[Anchored]] = {}
    for item in anchored:
        children.setdefault(str(item.entry.get("prev")), []).append(item)
    seen: dict[str, Anchored] = {}
    todo = list(roots)
    while todo:
        item = todo.pop()
        if item.hash in seen:
            continue
        seen[item.hash] = item
        todo.extend(children.get(item.hash, []))
    return sorted(seen.values(), key=lambda a: a.seq)


def _mine(
    entries: Sequence[dict[str, Any]], anchored: Sequence[Anchored], host: str, signer: str | None
) -> tuple[list[Anchored], list[Anchored]]:
    """The anchored entries of this log (the chain that starts where the local log starts),
    and those of every other chain this host began, signed by ``signer`` when given (a log
    deleted and started again, or rewritten from its first entry)."""
    roots = [a for a in anchored if a.entry.get("prev") == GENESIS]
    first = str(entries[0]["hash"]) if entries else None
    own = [r for r in roots if r.hash == first]
    ours = [
        r for r in roots if r.hash != first and r.entry.get("host") == host and signer in (None, r.signer)
    ]
    return _reachable(own, anchored), _reachable(ours, anchored)


def compare(
    local: bytes | None, anchored: Sequence[Anchored], host: str, signer: str | None = None
) -> list[Finding]:
    """What differs between this host's local log and its signed copies (empty: nothing).
    ``signer``: the identity this log's copies are signed by (narrows "this host's chains"
    when several state directories of one host share a repository)."""
    entries = _local_entries(local or b"")
    findings: list[Finding] = []
    if local and not local.endswith(b"\n"):
        findings.append(Finding(Problem.PARTIAL_LINE, len(entries)))
    own, others = _mine(entries, anchored, host, signer)
    if not entries:
        if others:
            findings.append(Finding(Problem.MISSING_LOCAL, 0, len(others)))
        return findings
    if own and others:  # this log has copies, and so has an earlier one it does not hold
        findings.append(Finding(Problem.REPLACED, others[0].seq, len(others)))
    mine = own or others
    local_hashes = {str(e["hash"]) for e in entries}
    last_seq = int(entries[-1]["seq"])
    missing = [a for a in mine if a.hash not in local_hashes]
    rewritten = [a for a in missing if a.seq <= last_seq]
    tail = [a for a in missing if a.seq > last_seq]
    if rewritten:
        start = rewritten[0].seq
        findings.append(Finding(Problem.REWRITTEN, start, sum(int(e["seq"]) >= start for e in entries)))
    if tail:
        findings.append(Finding(Problem.TAIL_MISSING, tail[0].seq, len(tail)))
    if not rewritten:
        copied = {a.hash for a in anchored}
        first = next((i for i, e in enumerate(entries) if e["hash"] not in copied), None)
        if first is not None:
            findings.append(Finding(Problem.UNANCHORED, int(entries[first]["seq"]), len(entries) - first))
    return findings
