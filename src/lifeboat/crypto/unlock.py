"""Turning what a person brings (a recovery-key file, or M custodians' shares) into the
recovery key, enforcing the deployment mode's escrow threshold and auditing every share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lifeboat.crypto.credentials import Credentials
from lifeboat.crypto.keys import RecoveryKey, load_recovery_key
from lifeboat.errors import KeyError_

# the shares' code (SLIP-39) loads only where shares are read: `wal fetch` unlocks with
# the recovery-key file once per segment
if TYPE_CHECKING:
    from lifeboat.crypto.escrow import EscrowRecord, ParsedShare

# Records one audit entry: (operation, **details); Any because details are free-form JSON.
Audit = Callable[..., Any]
# Asks the person at the terminal: (label, hide input) -> what they typed.
Prompt = Callable[[str, bool], str]


class _Deployment(Protocol):
    @property
    def mode(self) -> str: ...


class _RecoveryKeyFile(Protocol):
    @property
    def recovery_key(self) -> Path | None: ...


class UnlockPolicy(Protocol):
    """What unlocking reads of the policy (a `Policy`, or the cached slice of one that
    `wal fetch` takes: cli/policy_slice.py)."""

    @property
    def deployment(self) -> _Deployment: ...
    @property
    def repository(self) -> _RecoveryKeyFile: ...
    def escrow_threshold(self) -> int: ...


class KeyRecords(Protocol):
    """What unlocking needs from the repository's plaintext records (``repo.recovery_chain.
    UnlockRecords`` reads them): passed in, so crypto/ never imports repo/."""

    @property
    def repo_id(self) -> str:
        """The repository id a recovered key must carry."""
        ...

    def escrows(self) -> list[EscrowRecord]:
        """The escrow splits recorded in the repository."""
        ...

    def recovery_fingerprints(self) -> set[str]:
        """Every fingerprint a recovery key of this repository may have."""
        ...


def read_passphrases(paths: Sequence[Path]) -> list[bytes]:
    """The passphrases in these files (one per file, trailing newline dropped)."""
    out = []
    for path in paths:
        try:
            out.append(path.read_bytes().rstrip(b"\r\n"))
        except OSError as exc:
            raise KeyError_(f"cannot read passphrase file {path}: {exc.strerror}") from None
    return out


def _ask_passphrase(creds: Credentials) -> Callable[[str], bytes | None] | None:
    prompt = creds.prompt
    if prompt is None:
        return None
    return lambda custodian: prompt(f"passphrase of {custodian}'s share", True).encode() or None


def shares_from_files(creds: Credentials) -> list[ParsedShare]:
    """The shares in the files given, decrypted with the passphrase files or the prompt."""
    from lifeboat.crypto.escrow import read_share_file

    passphrases = read_passphrases(list(creds.passphrase_files))
    ask = _ask_passphrase(creds)
    return [share for path in creds.shares for share in read_share_file(path, passphrases, ask)]


def shares_from_prompt(prompt: Prompt, minimum: int, key_material: bool = False) -> list[ParsedShare]:
    """Custodians type their words on the terminal (hidden), one share after another;
    ``key_material``: each also types their share of the key-material escrow key."""
    from lifeboat.crypto.escrow import KEY_MATERIAL, parse_mnemonic

    shares: list[ParsedShare] = []
    escrowed: list[ParsedShare] = []
    needed = minimum
    while len({s.index for s in shares}) < needed:
        if len(shares) >= 16:
            raise KeyError_("too many shares typed without reaching the threshold")
        custodian = prompt(f"custodian name for share {len(shares) + 1}", False).strip() or "unnamed"
        words = prompt(f"{custodian}'s mnemonic words", True)
        share = parse_mnemonic(words, custodian, f"typed #{len(shares) + 1}")
        shares.append(share)
        if key_material:
            words = prompt(f"{custodian}'s key-material escrow words", True)
            escrowed.append(parse_mnemonic(words, custodian, f"typed #{len(shares)}", KEY_MATERIAL))
        needed = max(needed, share.threshold)
    return shares + escrowed


def _complete_split(shares: list[ParsedShare], escrows: list[EscrowRecord]) -> list[ParsedShare]:
    """The shares of the one recorded split that has its threshold among them, when there
    is one: custodians bring their newest files (recovery key rotated or re-split) and their
    first ones (which alone hold the key-material escrow shares). Otherwise all, so a mix
    is refused as before, naming the share that does not belong."""
    recorded = {r.identifier for r in escrows}
    for identifier in dict.fromkeys(s.identifier for s in shares):
        group = [s for s in shares if s.identifier == identifier]
        if identifier in recorded and len({s.index for s in group}) >= group[0].threshold:
            return group
    return shares


def from_shares(
    records: KeyRecords, shares: list[ParsedShare], audit: Audit | None, purpose: str
) -> RecoveryKey:
    """The recovery key the shares combine to, checked against the repository's records
    (key-material escrow shares among them are not the recovery key's and are left out)."""
    from lifeboat.crypto.escrow import RECOVERY, combine

    shares = [s for s in shares if s.purpose == RECOVERY]
    escrows = records.escrows()
    shares = _complete_split(shares, escrows)
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
    key = RecoveryKey.from_secret(records.repo_id, secret)
    if key.fingerprint() not in records.recovery_fingerprints():
        raise KeyError_("the shares recover a key that does not belong to this repository")
    if audit:
        for share in shares:
            audit("key-access", custodian=share.custodian, share_index=share.index, purpose=purpose)
    return key


def _gather_shares(
    creds: Credentials, minimum: int, audit: Audit | None, purpose: str, key_material: bool = False
) -> list[ParsedShare]:
    try:
        if creds.shares:
            return shares_from_files(creds)
        if creds.prompt is None:
            raise KeyError_("no shares given")  # callers only come here with shares or a prompt
        return shares_from_prompt(creds.prompt, minimum, key_material)
    except KeyError_ as exc:
        if audit:
            audit("key-access", outcome="refused", reason=exc.message, purpose=purpose)
        raise


@dataclass(frozen=True)
class Unlocked:
    """What the person brought, turned into keys: the recovery key, and the custodians'
    shares of the key-material escrow key (empty when none were brought)."""

    recovery: RecoveryKey
    key_material: list[ParsedShare] = field(default_factory=list, repr=False)


def _unlocked(records: KeyRecords, shares: list[ParsedShare], audit: Audit | None, purpose: str) -> Unlocked:
    from lifeboat.crypto.escrow import KEY_MATERIAL

    key = from_shares(records, shares, audit, purpose)
    return Unlocked(key, [s for s in shares if s.purpose == KEY_MATERIAL])


def resolve_for_policy(
    policy: UnlockPolicy,
    records: KeyRecords,
    creds: Credentials,
    *,
    purpose: str,
    asset: str | None,
    needs_escrow: bool = False,
    audit: Audit | None = None,
) -> RecoveryKey:
    """The recovery key (``unlock_for_policy`` without the key-material shares)."""
    unlocked = unlock_for_policy(
        policy, records, creds, purpose=purpose, asset=asset, needs_escrow=needs_escrow, audit=audit
    )
    return unlocked.recovery


def unlock_for_policy(
    policy: UnlockPolicy,
    records: KeyRecords,
    creds: Credentials,
    *,
    purpose: str,
    asset: str | None,
    needs_escrow: bool = False,
    audit: Audit | None = None,
) -> Unlocked:
    """Shares when given; otherwise the recovery-key file. Key material (``needs_escrow``,
    from the asset's kind) always needs the escrow threshold of the current deployment
    mode, even when a key file exists; the data itself opens only with the shares of the
    key-material escrow key, which no key file holds (repo/escrow.py)."""
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
        return _unlocked(records, _gather_shares(creds, threshold, audit, purpose), audit, purpose)
    prompt = creds.prompt
    if needs_escrow and prompt is not None:
        typed = _gather_shares(creds, threshold, audit, purpose, key_material=True)
        return _unlocked(records, typed, audit, purpose)
    if needs_escrow:
        raise KeyError_(
            f"restoring key material needs {threshold} custodians' shares (deployment mode "
            f"{policy.deployment.mode})",
            hint="pass --share FILE once per custodian",
        )
    path = creds.recovery_key or policy.repository.recovery_key
    if path is None and prompt is not None:
        return _unlocked(records, _gather_shares(creds, 1, audit, purpose), audit, purpose)
    if path is None:
        raise KeyError_(
            f"{purpose} needs the recovery key",
            hint="pass --recovery-key FILE or --share FILE (M of N custodians)",
        )
    key = load_recovery_key(Path(path))
    if audit:
        audit("key-access", purpose=purpose, via="recovery-key file")
    return Unlocked(key)
