"""Escrow of the recovery key: split it into M-of-N custodian shares (recorded in the
repository), and check that a custodian's share belongs to this repository."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lifeboat import runtime
from lifeboat.crypto.credentials import Credentials
from lifeboat.errors import KeyError_
from lifeboat.policy import Policy
from lifeboat.services.session import reading


@dataclass
class SplitResult:
    """The shares written, one file per custodian, and how many are needed."""

    threshold: int
    shares: list[Path] = field(default_factory=list)
    # the repository seals key material to an escrow key these files hold no share of:
    # custodians must keep their earlier files for it
    without_key_material: bool = False


@dataclass
class ShareCheck:
    """A valid share: whose it is and the escrow it belongs to."""

    custodian: str
    member: int  # 1-based
    threshold: int
    of: int
    escrow_created: str
    key_material: bool = False  # the file also holds a valid share of the key-material escrow key


def split(
    policy: Policy,
    recovery_key: Path,
    out: Path,
    *,
    threshold: int | None = None,
    custodians: list[str] | None = None,
    passphrases: dict[str, bytes] | None = None,
) -> SplitResult:
    """`lifeboat escrow split`: write the shares and record the escrow (audited)."""
    from lifeboat.crypto.escrow import split_recovery_key
    from lifeboat.crypto.keys import load_recovery_key

    recovery = load_recovery_key(recovery_key)
    creds = Credentials(recovery_key=recovery_key)
    with reading(policy, creds, purpose="escrow split") as session:
        written = split_recovery_key(
            policy, session.repo, recovery, out, threshold, custodians, passphrases or {}
        )
        m = threshold or policy.escrow_threshold()
        session.record("escrow-split", threshold=m, custodian_names=[p.stem for p in written])
        escrowed = "escrow_key" in session.repo.config
    return SplitResult(m, written, without_key_material=escrowed)


def verify_share(policy: Policy, creds: Credentials) -> ShareCheck:
    """`lifeboat escrow verify-share`: needs no key, only the escrow records (audited)."""
    from lifeboat.crypto.escrow import KEY_MATERIAL
    from lifeboat.crypto.unlock import shares_from_files
    from lifeboat.repo import RecordsView
    from lifeboat.repo.escrow import current_escrow
    from lifeboat.repo.records import escrow_records

    shares = shares_from_files(creds)
    parsed = shares[0]
    storage = runtime.storage_for(policy)
    try:
        view = RecordsView(storage)
        records = escrow_records(view)
        escrow = current_escrow(view.config, view)  # a replaced escrow key's shares are refused
    finally:
        storage.close()
    match = [r for r in records if r.identifier == parsed.identifier]
    audit = runtime.audit_log(policy)
    key_material = [s for s in shares if s.purpose == KEY_MATERIAL]
    foreign = [s for s in key_material if escrow is None or s.identifier != escrow.identifier]
    if not match or foreign:
        audit.append("escrow-verify-share", outcome="refused", custodian=parsed.custodian)
        which = "key-material escrow key" if match else "escrow"
        raise KeyError_(f"share of {parsed.custodian} does not belong to this repository's {which}")
    record = match[-1]
    audit.append("escrow-verify-share", custodian=parsed.custodian)
    return ShareCheck(
        parsed.custodian,
        parsed.index + 1,
        record.threshold,
        len(record.custodians),
        record.created,
        bool(key_material),
    )
