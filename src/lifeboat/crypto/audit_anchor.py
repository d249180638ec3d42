"""Audit entries anchored in the repository as signed objects, and the comparison that finds
a truncated, tail-deleted, rewritten or missing local log (issue #14).

The local audit log is a SHA-256 hash chain (audit.py), which catches an edited middle
line but not a cut tail or a chain rewritten with recomputed hashes: whoever can write the
file can recompute every hash. Each line is therefore also stored in the repository as
``audit/<seq, 12 digits>-<first 16 hex of its hash>``, signed (101-byte trailer,
crypto/signed.py, type ``audit``, no asset) by the writer that logged it or, for
recovery-side operations, by the root key. A rewritten local chain cannot produce those
signatures, and under Object Lock the anchored copies cannot be removed either.

A copy is sealed: ``"LBAC" 0x01 u16be(len) chain sealed ‖ trailer``, where ``chain`` is the
canonical JSON of the entry's chain fields (seq, hash, prev, writer) and ``sealed`` the
whole line sealed for its signer and the recovery side (crypto/metadata.py, the copy's
name in the associated data). Every reader walks every chain and checks who signed what
from the public fields; only the signer and the recovery side read what happened (the
storage provider reads no operation, asset, host or operator). Entries carry a random
nonce, so neither their hash nor the copy's name lets anyone guess them. A copy a reader
cannot open is judged by its writer's standing now, not by a time it claims inside the
seal. Copies written before (the bare line ‖ trailer) are still read.

Hashes are recomputed here with the same rule as audit.py (SHA-256 of the entry's
canonical JSON without ``hash``); crypto/ must not import ops/.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from lifeboat.crypto.signed import (
    SIGNATURE_MAGIC,
    SIGNATURE_SIZE,
    ObjectType,
    Signature,
    sign_by_root,
    sign_object,
    signature_matches,
    statement,
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
COPY_MAGIC = b"LBAC"
COPY_VERSION = 1
# what every reader sees of an entry: enough to walk the chain and to name its writer
CHAIN_FIELDS = ("seq", "hash", "prev", "writer")

# (copy name, line) -> the line sealed for the signer and the recovery side
Sealer = Callable[[str, bytes], bytes]
# (copy name, signer's public key, sealed line) -> the line; None when this reader holds no
# key for it; IntegrityError when it does and the line does not open
Opener = Callable[[str, bytes, bytes], bytes | None]


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def parse_entry(line: bytes) -> dict[str, Any]:
    try:
        entry = json.loads(line)
        int(entry["seq"]), str(entry["hash"])
    except (ValueError, KeyError, TypeError, OverflowError):
        raise IntegrityError("audit entry is damaged") from None
    if not isinstance(entry, dict) or entry_hash(entry) != entry["hash"]:
        raise IntegrityError("audit entry is damaged (its hash does not match)")
    return entry


def anchor_name(entry: dict[str, Any]) -> str:
    return f"audit/{int(entry['seq']):012d}-{str(entry['hash'])[:16]}"


def chain_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The fields of an entry a sealed copy shows every reader."""
    return {field: entry.get(field) for field in CHAIN_FIELDS}


def _chain_bytes(entry: dict[str, Any]) -> bytes:
    return json.dumps(chain_of(entry), sort_keys=True, separators=(",", ":")).encode()


def _split_sealed(body: bytes) -> tuple[bytes, bytes]:
    """(chain JSON, sealed line) of a sealed copy's signed body."""
    if len(body) < 7 or body[:4] != COPY_MAGIC or body[4] != COPY_VERSION:
        raise IntegrityError("audit copy is damaged (bad magic or version)")
    (length,) = struct.unpack(">H", body[5:7])
    if len(body) <= 7 + length:
        raise IntegrityError("audit copy is truncated")
    return body[7 : 7 + length], body[7 + length :]


def sealed_copy(entry: dict[str, Any], sealed_line: bytes) -> bytes:
    """The signed body of a sealed copy: magic, the public chain fields, the sealed line."""
    chain = _chain_bytes(entry)
    return COPY_MAGIC + bytes([COPY_VERSION]) + struct.pack(">H", len(chain)) + chain + sealed_line


def anchor(line: bytes, signer: WriterKey | RootKey, seal: Sealer | None = None) -> tuple[str, bytes]:
    """(name, stored bytes) of one local audit line as a signed repository object: sealed
    with ``seal``, else the bare line (the earlier form, kept for tests of old copies)."""
    line = line.rstrip(b"\n")
    entry = parse_entry(line)
    name = anchor_name(entry)
    body = line if seal is None else sealed_copy(entry, seal(name, line))
    if isinstance(signer, RootKey):
        signature = sign_by_root(signer, ObjectType.AUDIT, name, body)
    else:
        signature = sign_object(signer, ObjectType.AUDIT, name, None, body)
    return name, body + signature.to_bytes()


def same_copy(
    stored: bytes, existing: bytes, name: str, repo_id: str, line: bytes, signers: Collection[bytes] = ()
) -> bool:
    """Whether ``existing`` (what the name holds) is a copy of ``line`` signed by the signer
    of ``stored`` or one of ``signers`` (its earlier generations): a retry (a sealed copy
    differs byte for byte each time it is sealed), the same entry copied before a key
    rotation, or before copies were sealed (the bare line, signed)."""
    if stored == existing:
        return True
    if min(len(stored), len(existing)) <= SIGNATURE_SIZE:
        return False
    body = existing[:-SIGNATURE_SIZE]
    try:
        ours, theirs = (Signature.from_bytes(c[-SIGNATURE_SIZE:]) for c in (stored, existing))
        same_entry = body == line.rstrip(b"\n") or (
            body[:4] == COPY_MAGIC and _split_sealed(stored[:-SIGNATURE_SIZE])[0] == _split_sealed(body)[0]
        )
    except IntegrityError:
        return False
    if not same_entry or theirs.public not in {ours.public, *signers}:
        return False
    return signature_matches(
        theirs.public, statement(ObjectType.AUDIT, repo_id, name, None, body), theirs.signature
    )


@dataclass(frozen=True)
class Anchored:
    """An anchored entry whose signature checked out, and who signed it. For a sealed copy
    this reader holds no key for, ``entry`` holds its public chain fields only."""

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


@dataclass(frozen=True)
class Unjudged:
    """A sealed copy this reader cannot open, signed by a writer revoked since: the time it
    claims is sealed, so whether it was written before the revocation is the recovery
    side's to say. It vouches for no local entry, and is not reported as planted either;
    its public chain fields still link the chain it belongs to (``link``)."""

    name: str
    writer: str | None
    chain: dict[str, Any]

    @property
    def link(self) -> Anchored:
        """The copy as a chain link, for walking chains (it vouches for nothing)."""
        return Anchored(self.name, self.chain, str(self.writer))


def _opened_sealed(
    name: str, body: bytes, public: bytes, open_line: Opener | None
) -> tuple[dict[str, Any], bytes | None] | Refusal:
    """(entry, line) of a sealed copy: the whole entry when this reader opens it (its chain
    fields checked against the public ones), else the public fields and None."""
    try:
        chain_json, sealed = _split_sealed(body)
        chain = json.loads(chain_json)
        int(chain["seq"]), str(chain["hash"])
    except (IntegrityError, ValueError, KeyError, TypeError, OverflowError):
        return Refusal.MALFORMED
    if not isinstance(chain, dict) or set(chain) != set(CHAIN_FIELDS):
        return Refusal.MALFORMED
    try:
        line = open_line(name, public, sealed) if open_line is not None else None
    except IntegrityError:
        return Refusal.BAD_SIGNATURE  # sealed by another key than the one that signed it
    if line is None:
        return chain, None
    try:
        entry = parse_entry(line)
    except IntegrityError:
        return Refusal.MALFORMED
    if chain_of(entry) != chain:
        return Refusal.MALFORMED  # the public fields say other than the sealed entry
    return entry, line


def _named(registry: Registry, public: bytes) -> str | None:
    """Who a key is, for a report: the root key, a writer of the registry, or unknown."""
    if public == registry.root_public:
        return RECOVERY_SIDE
    entry = registry.entry_for(public)
    return entry.name if entry is not None else None


def read_anchor(
    name: str,
    stored: bytes,
    registry: Registry,
    at_time: datetime | None = None,
    open_line: Opener | None = None,
    now: datetime | None = None,
) -> Anchored | Authorisation | Unjudged:
    """The entry and its signer, or the refusal (reported, never used for comparison).

    ``at_time`` None: the writer is judged at the time the entry claims, so entries of a
    writer revoked since stay valid (a revocation dated at the suspected compromise is what
    refuses a stolen key's back-dated entries); a sealed copy this reader cannot open is
    judged at ``now``."""
    if len(stored) <= SIGNATURE_SIZE or stored[-SIGNATURE_SIZE:][:4] != SIGNATURE_MAGIC:
        return Authorisation(None, Refusal.UNSIGNED)  # e.g. a bare line, as copies once were
    body, trailer = stored[:-SIGNATURE_SIZE], stored[-SIGNATURE_SIZE:]
    try:
        public = Signature.from_bytes(trailer).public
    except IntegrityError:
        return Authorisation(None, Refusal.MALFORMED)
    entry: dict[str, Any] | None = None
    line: bytes | None = body  # the bare line of an earlier copy
    if body[:4] == COPY_MAGIC:
        # nothing a key did not sign is parsed or opened (the registry judges it below)
        signed = statement(ObjectType.AUDIT, registry.repo_id, name, None, body)
        if not signature_matches(public, signed, Signature.from_bytes(trailer).signature):
            return Authorisation(_named(registry, public), Refusal.BAD_SIGNATURE)
        found = _opened_sealed(name, body, public, open_line)
        if isinstance(found, Refusal):
            return Authorisation(_named(registry, public), found)
        entry, line = found
        if name not in (anchor_name(entry), anchor_name(entry) + SIGNED_SUFFIX):
            return Authorisation(_named(registry, public), Refusal.BAD_SIGNATURE)  # moved
    claimed = entry_time(line) if line is not None else (now or datetime.now(UTC))
    if at_time is None:
        at_time = claimed
        if at_time is None:
            return Authorisation(None, Refusal.MALFORMED)
    if public == registry.root_public:
        try:
            verify_by_root(registry.root_public, registry.repo_id, ObjectType.AUDIT, name, body, trailer)
        except IntegrityError:
            return Authorisation(RECOVERY_SIDE, Refusal.BAD_SIGNATURE)
        signer = RECOVERY_SIDE
    else:
        verdict = verify_object(registry, ObjectType.AUDIT, name, None, body, trailer, at_time)
        if not verdict and verdict.refusal is Refusal.REVOKED and line is None and entry is not None:
            return Unjudged(name, verdict.writer, entry)
        if not verdict:
            return verdict
        signer = str(verdict.writer)
    if entry is None:
        try:
            entry = parse_entry(body)
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


def _vouched_for(anchored: Sequence[Anchored], signer: str | None) -> Callable[[dict[str, Any]], bool]:
    """Whether a local entry has a copy signed by the writer it names (this log's signer
    when it names none): another writer's copy of an entry vouches for nothing."""
    by = {(a.hash, a.signer) for a in anchored}
    hashes = {a.hash for a in anchored}

    def vouched(e: dict[str, Any]) -> bool:
        expected = e.get("writer") or signer
        return (str(e["hash"]), expected) in by if expected is not None else str(e["hash"]) in hashes

    return vouched


def compare(
    local: bytes | None,
    anchored: Sequence[Anchored],
    host: str,
    signer: str | None = None,
    links: Sequence[Anchored] = (),
) -> list[Finding]:
    """What differs between this host's local log and its signed copies (empty: nothing).
    ``signer``: the identity this log's copies are signed by (narrows "this host's chains"
    when several state directories of one host share a repository). ``links``: copies that
    may only join chains (sealed copies of writers revoked since, that this reader cannot
    judge): they show a deleted tail or a rewrite, and vouch for no local entry."""
    entries = _local_entries(local or b"")
    findings: list[Finding] = []
    if local and not local.endswith(b"\n"):
        findings.append(Finding(Problem.PARTIAL_LINE, len(entries)))
    own, others = _mine(entries, [*anchored, *links], host, signer)
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
        vouched = _vouched_for(anchored, signer)
        first = next((i for i, e in enumerate(entries) if not vouched(e)), None)
        if first is not None:
            findings.append(Finding(Problem.UNANCHORED, int(entries[first]["seq"]), len(entries) - first))
    return findings
