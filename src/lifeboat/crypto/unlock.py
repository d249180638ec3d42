"""Turning what a person brings (a recovery-key file, or M custodians' shares) into the
recovery key, enforcing the deployment mode's escrow threshold and auditing every share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lifeboat.crypto.escrow import combine, escrow_records, read_share
from lifeboat.crypto.keys import RecoveryKey, load_recovery_key, recovery_fingerprint
from lifeboat.errors import KeyError_

Audit = Callable[..., Any]


def from_shares(records: Any, share_paths: list[Path], audit: Audit | None, purpose: str) -> RecoveryKey:
    config = records.config
    try:
        shares = [read_share(p) for p in share_paths]
    except KeyError_ as exc:
        if audit:
            audit("key-access", outcome="refused", reason=exc.message, purpose=purpose)
        raise
    escrows = escrow_records(records)
    matching = [r for r in escrows if shares and r.identifier == shares[0].identifier]
    if escrows and not matching:
        if audit:
            audit("key-access", outcome="refused", reason="share from another repository", purpose=purpose)
        raise KeyError_(f"share of {shares[0].custodian} belongs to another repository or escrow")
    record = matching[-1] if matching else None
    try:
        secret = combine(shares, record)
    except KeyError_ as exc:
        if audit:
            audit(
                "key-access",
                outcome="refused",
                reason=exc.message,
                purpose=purpose,
                custodians=[s.custodian for s in shares],
            )
        raise
    key = RecoveryKey.from_secret(str(config["id"]), secret)
    if recovery_fingerprint(key.public) != config.get("recovery_fingerprint"):
        raise KeyError_("the shares recover a key that does not belong to this repository")
    if audit:
        for share in shares:
            audit("key-access", custodian=share.custodian, share_index=share.index, purpose=purpose)
    return key


def resolve_for_policy(
    policy: Any, records: Any, creds: Any, *, purpose: str, asset: str | None, audit: Audit | None = None
) -> RecoveryKey:
    """Shares when given; otherwise the recovery-key file. A `keys` asset always needs the
    escrow threshold of the current deployment mode, even when a key file exists."""
    needs_escrow = asset is not None and policy.asset(asset).kind == "keys"
    threshold = policy.escrow_threshold()
    if creds.shares:
        if needs_escrow and len(creds.shares) < threshold:
            if audit:
                audit(
                    "key-access",
                    asset=asset,
                    outcome="refused",
                    purpose=purpose,
                    reason=f"{len(creds.shares)} of {threshold} shares",
                )
            raise KeyError_(
                f"restoring key material needs {threshold} custodians' shares, {len(creds.shares)} given"
            )
        return from_shares(records, list(creds.shares), audit, purpose)
    if needs_escrow:
        raise KeyError_(
            f"restoring key material needs {threshold} custodians' shares (deployment mode "
            f"{policy.deployment.mode})",
            hint="pass --share FILE once per custodian",
        )
    path = creds.recovery_key or policy.repository.recovery_key
    if path is None:
        raise KeyError_(
            f"{purpose} needs the recovery key",
            hint="pass --recovery-key FILE or --share FILE (M of N custodians)",
        )
    key = load_recovery_key(Path(path))
    if audit:
        audit("key-access", purpose=purpose, via="recovery-key file")
    return key
