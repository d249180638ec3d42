"""Turning what a person brings (a recovery-key file, or M custodians' shares) into the
recovery key, enforcing the deployment mode's escrow threshold and auditing every share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lifeboat.crypto.escrow import ParsedShare, combine, escrow_records, parse_mnemonic, read_share
from lifeboat.crypto.keys import RecoveryKey, load_recovery_key
from lifeboat.errors import KeyError_
from lifeboat.repo.recovery_chain import known_fingerprints

Audit = Callable[..., Any]
# Asks the person at the terminal: (label, hide input) -> what they typed.
Prompt = Callable[[str, bool], str]


def read_passphrases(paths: Sequence[Path]) -> list[bytes]:
    out = []
    for path in paths:
        try:
            out.append(path.read_bytes().rstrip(b"\r\n"))
        except OSError as exc:
            raise KeyError_(f"cannot read passphrase file {path}: {exc.strerror}") from None
    return out


def _ask_passphrase(creds: Any) -> Callable[[str], bytes | None] | None:
    prompt = getattr(creds, "prompt", None)
    if prompt is None:
        return None
    return lambda custodian: prompt(f"passphrase of {custodian}'s share", True).encode() or None


def shares_from_files(creds: Any) -> list[ParsedShare]:
    passphrases = read_passphrases(list(getattr(creds, "passphrase_files", ())))
    return [read_share(p, passphrases, _ask_passphrase(creds)) for p in creds.shares]


def shares_from_prompt(prompt: Prompt, minimum: int) -> list[ParsedShare]:
    """Custodians type their words on the terminal (hidden), one share after another."""
    shares: list[ParsedShare] = []
    needed = minimum
    while len({s.index for s in shares}) < needed:
        if len(shares) >= 16:
            raise KeyError_("too many shares typed without reaching the threshold")
        custodian = prompt(f"custodian name for share {len(shares) + 1}", False).strip() or "unnamed"
        words = prompt(f"{custodian}'s mnemonic words", True)
        share = parse_mnemonic(words, custodian, f"typed #{len(shares) + 1}")
        shares.append(share)
        needed = max(needed, share.threshold)
    return shares


def from_shares(records: Any, shares: list[ParsedShare], audit: Audit | None, purpose: str) -> RecoveryKey:
    config = records.config
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
    if key.fingerprint() not in known_fingerprints(records):
        raise KeyError_("the shares recover a key that does not belong to this repository")
    if audit:
        for share in shares:
            audit("key-access", custodian=share.custodian, share_index=share.index, purpose=purpose)
    return key


def _gather_shares(creds: Any, minimum: int, audit: Audit | None, purpose: str) -> list[ParsedShare]:
    try:
        if creds.shares:
            return shares_from_files(creds)
        return shares_from_prompt(creds.prompt, minimum)
    except KeyError_ as exc:
        if audit:
            audit("key-access", outcome="refused", reason=exc.message, purpose=purpose)
        raise


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
        return from_shares(records, _gather_shares(creds, threshold, audit, purpose), audit, purpose)
    prompt = getattr(creds, "prompt", None)
    if needs_escrow and prompt is not None:
        return from_shares(records, _gather_shares(creds, threshold, audit, purpose), audit, purpose)
    if needs_escrow:
        raise KeyError_(
            f"restoring key material needs {threshold} custodians' shares (deployment mode "
            f"{policy.deployment.mode})",
            hint="pass --share FILE once per custodian",
        )
    path = creds.recovery_key or policy.repository.recovery_key
    if path is None and prompt is not None:
        return from_shares(records, _gather_shares(creds, 1, audit, purpose), audit, purpose)
    if path is None:
        raise KeyError_(
            f"{purpose} needs the recovery key",
            hint="pass --recovery-key FILE or --share FILE (M of N custodians)",
        )
    key = load_recovery_key(Path(path))
    if audit:
        audit("key-access", purpose=purpose, via="recovery-key file")
    return key
