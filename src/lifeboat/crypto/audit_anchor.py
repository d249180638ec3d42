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


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _parse(line: bytes) -> dict[str, Any]:
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
    name = anchor_name(_parse(line))
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


def read_anchor(name: str, stored: bytes, registry: Registry, at_time: datetime) -> Anchored | Authorisation:
    """The entry and its signer, or the refusal (reported, never used for comparison)."""
    if len(stored) <= SIGNATURE_SIZE:
        return Authorisation(None, Refusal.UNSIGNED)
    line, trailer = stored[:-SIGNATURE_SIZE], stored[-SIGNATURE_SIZE:]
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
        entry = _parse(line)
    except IntegrityError:
        return Authorisation(signer, Refusal.MALFORMED)
    if anchor_name(entry) != name:
        return Authorisation(signer, Refusal.BAD_SIGNATURE)
    return Anchored(name, entry, signer)


# --- comparing the local log with the anchored copies -------------------------------------


class Problem(StrEnum):
    MISSING_LOCAL = "the local audit log is missing"
    PARTIAL_LINE = "the local audit log ends in a cut line (truncated)"
    TAIL_MISSING = "entries at the end of the local log were deleted or truncated"
    REWRITTEN = "the local log differs from the signed copies (rewritten)"
    UNANCHORED = "local entries have no signed copy in the repository"


@dataclass(frozen=True)
class Finding:
    problem: Problem
    seq: int | None
    count: int = 1

    def __str__(self) -> str:
        where = f" from seq {self.seq}" if self.seq is not None else ""
        return f"{self.problem.value}{where} ({self.count} entr{'y' if self.count == 1 else 'ies'})"


def _chains(anchored: Sequence[Anchored]) -> list[list[Anchored]]:
    """Anchored entries joined into chains by their ``prev`` links, each from its genesis."""
    after: dict[str, Anchored] = {}
    for item in sorted(anchored, key=lambda a: a.seq):
        after.setdefault(str(item.entry.get("prev")), item)
    chains = []
    for start in (a for a in anchored if a.entry.get("prev") == GENESIS):
        chain = [start]
        while chain[-1].hash in after and len(chain) <= len(anchored):
            chain.append(after[chain[-1].hash])
        chains.append(chain)
    return chains


def _local_entries(local: bytes) -> list[dict[str, Any]]:
    entries = []
    for raw in local.splitlines():
        try:
            entries.append(_parse(raw))
        except IntegrityError:
            break  # audit.verify names the bad line; compare what precedes it
    return entries


def compare(local: bytes | None, anchored: Sequence[Anchored], host: str) -> list[Finding]:
    """What differs between this host's local log and its signed copies (empty: nothing)."""
    chains = _chains(anchored)
    entries = _local_entries(local or b"")
    findings: list[Finding] = []
    if local and not local.endswith(b"\n"):
        findings.append(Finding(Problem.PARTIAL_LINE, len(entries)))
    mine = [c for c in chains if c[0].entry.get("host") == host]
    if not entries:
        if mine:
            findings.append(Finding(Problem.MISSING_LOCAL, 0, sum(len(c) for c in mine)))
        return findings
    chain = next((c for c in chains if c[0].hash == entries[0]["hash"]), None)
    if chain is None:
        if mine:
            return [*findings, Finding(Problem.REWRITTEN, 0, len(entries))]
        return [*findings, Finding(Problem.UNANCHORED, 0, len(entries))]
    for position, copy in enumerate(chain):
        if position >= len(entries):
            return [*findings, Finding(Problem.TAIL_MISSING, copy.seq, len(chain) - position)]
        if entries[position]["hash"] != copy.hash:
            return [*findings, Finding(Problem.REWRITTEN, copy.seq, len(entries) - position)]
    if len(entries) > len(chain):
        findings.append(
            Finding(Problem.UNANCHORED, int(entries[len(chain)]["seq"]), len(entries) - len(chain))
        )
    return findings
