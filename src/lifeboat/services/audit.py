"""`lifeboat audit verify`: the local hash chain, and the local log compared with its signed
copies in the repository (crypto/audit_anchor.py): a truncated log, a deleted tail, a
rewritten chain, a missing local log, entries never copied and copies nobody of this
repository signed are each named.

It reads with the writer key alone (the policy's key file) and then writes nothing; with
only the recovery key (file or shares) the key's use is audited, and only after the verdict,
so the verification never changes what it verifies.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifeboat import runtime
from lifeboat.audit import AuditLog, read_log, verify
from lifeboat.crypto.audit_anchor import Finding, Problem, compare
from lifeboat.crypto.credentials import Credentials
from lifeboat.policy import Policy
from lifeboat.repo import Repository
from lifeboat.repo.audit_copies import audit_copies, audit_identity


@dataclass
class AuditFinding:
    """One named problem: its kind (``problem``), the sentence, where it starts, how many."""

    problem: str
    message: str
    seq: int | None = None
    count: int = 1


@dataclass
class AuditVerification:
    """What `audit verify` found; ``ok`` only when the chain holds and nothing differs."""

    log: str
    entries: int
    chain_ok: bool
    anchored: int = 0  # signed copies accepted (every writer's)
    compared: bool = False  # False: no repository comparison (legacy repository)
    signer: str | None = None  # whose copies this log's are
    findings: list[AuditFinding] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)  # name, writer, reason
    note: str | None = None

    @property
    def ok(self) -> bool:
        """Nothing wrong: the chain verifies and the repository agrees."""
        return self.chain_ok and not self.findings

    def to_json(self) -> dict[str, Any]:
        """The --json form."""
        return {"ok": self.ok, **self.__dict__}


def verify_audit(policy: Policy, creds: Credentials, file: Path | None = None) -> AuditVerification:
    """Verify the audit log at ``file`` (default: the state directory's) against the
    repository's signed copies."""
    path = file or Path(policy.state_dir) / "audit.jsonl"
    try:
        local: bytes | None = read_log(path)
    except FileNotFoundError:
        local = None
    chain = verify(path)
    result = AuditVerification(str(path), chain.entries, chain.ok or local is None)
    if local is not None and not chain.ok:
        result.findings.append(AuditFinding("broken-chain", str(chain.problem), None))
    keyfile = Path(policy.repository.keyfile)
    deferred: list[tuple[str, dict[str, Any]]] = []
    if keyfile.is_file() and not creds.given:
        repo = runtime.open_for_write(policy)
    else:
        repo = runtime.open_for_read(
            policy, creds, purpose="audit verify", record=lambda op, **kw: deferred.append((op, kw))
        )
    try:
        _compare(repo, local, result)
        if deferred:
            _record_key_use(policy, repo, result, deferred)
    finally:
        repo.close()
    return result


def _compare(repo: Repository, local: bytes | None, result: AuditVerification) -> None:
    if repo.legacy:
        result.note = "legacy repository: its audit copies are not signed, only the local chain was verified"
        return
    copies = audit_copies(repo)
    result.compared, result.anchored = True, len(copies.accepted)
    result.signer = audit_identity(repo)
    result.refused = [{"name": r.name, "writer": r.writer, "reason": r.reason} for r in copies.refused]
    if copies.unjudged:
        writers = sorted({str(u.writer) for u in copies.unjudged})
        result.note = (
            f"{len(copies.unjudged)} copies by writers revoked since ({', '.join(writers)}) are sealed "
            "to other keys and were not judged: run 'lifeboat audit verify' with the recovery key"
        )
    links = [u.link for u in copies.unjudged]
    findings = compare(local, copies.accepted, socket.gethostname(), result.signer, links)
    if local is None and not findings:
        findings.append(Finding(Problem.MISSING_LOCAL, None, 0))
    result.findings += [_named(f) for f in findings]
    impostors = [a for a in copies.accepted if a.entry.get("writer") not in (None, a.signer)]
    if impostors:
        first = impostors[0]
        result.findings.append(
            AuditFinding(
                "impersonated",
                f"entries name another writer than the key that signed them: seq {first.seq} "
                f"says {first.entry.get('writer')!r}, signed by {first.signer!r}",
                first.seq,
                len(impostors),
            )
        )
    if copies.refused:
        result.findings.append(
            AuditFinding(
                "refused",
                f"{Problem.REFUSED.value}: "
                + ", ".join(f"{r.name} ({r.reason})" for r in copies.refused[:5])
                + (f" and {len(copies.refused) - 5} more" if len(copies.refused) > 5 else ""),
                None,
                len(copies.refused),
            )
        )


def _named(finding: Finding) -> AuditFinding:
    kind = finding.problem.name.lower().replace("_", "-")
    return AuditFinding(kind, str(finding), finding.seq, finding.count)


def _record_key_use(
    policy: Policy, repo: Repository, result: AuditVerification, deferred: list[tuple[str, dict[str, Any]]]
) -> None:
    """The recovery key's use, logged after the verdict: through the repository when the
    log verified (it then copies what waits), locally only when it did not (what failed
    to verify is left as found)."""
    log = runtime.audit_log(policy, repo) if result.ok else AuditLog(runtime.audit_log(policy).path)
    for operation, details in deferred:
        log.append(operation, **details)
    log.append("audit-verify", outcome="ok" if result.ok else "failed", findings=len(result.findings))
