"""Escrow of the recovery key: M-of-N SLIP-39 mnemonic shares held by custodians.

The repository records who holds shares, the threshold, the SLIP-39 identifier and the
recovery key's public fingerprint: enough to check a share belongs here, never the secret.
Error messages never quote mnemonic words (the library's own messages do, so they are
replaced here).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import shamir_mnemonic
from shamir_mnemonic.share import Share

from lifeboat.crypto.keys import RecoveryKey, write_secret_file
from lifeboat.errors import KeyError_

SHARE_HEADER = "# lifeboat recovery-key share (SLIP-39). Keep offline. Custodian: {custodian}\n"


@dataclass(frozen=True)
class EscrowRecord:
    threshold: int
    custodians: list[str]
    identifier: int
    fingerprint: str
    created: str

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "custodians": self.custodians,
            "identifier": self.identifier,
            "fingerprint": self.fingerprint,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EscrowRecord:
        return cls(
            int(data["threshold"]),
            list(data["custodians"]),
            int(data["identifier"]),
            str(data["fingerprint"]),
            str(data.get("created", "")),
        )


@dataclass(frozen=True)
class ParsedShare:
    custodian: str
    mnemonic: str
    identifier: int
    index: int
    threshold: int


def split(
    recovery: RecoveryKey, threshold: int, custodians: list[str]
) -> tuple[EscrowRecord, dict[str, str]]:
    if not 1 <= threshold <= len(custodians) <= 16:
        raise KeyError_(f"cannot split into {threshold}-of-{len(custodians)} shares (1 <= M <= N <= 16)")
    if len(set(custodians)) != len(custodians):
        raise KeyError_("custodian names must be unique")
    groups = shamir_mnemonic.generate_mnemonics(1, [(threshold, len(custodians))], recovery.secret)
    mnemonics = groups[0]
    identifier = Share.from_mnemonic(mnemonics[0]).identifier
    record = EscrowRecord(
        threshold,
        custodians,
        identifier,
        recovery.fingerprint(),
        datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return record, dict(zip(custodians, mnemonics, strict=True))


def write_shares(out_dir: Path, shares: dict[str, str]) -> list[Path]:
    written = []
    for custodian, mnemonic in shares.items():
        path = out_dir / f"{custodian}.share"
        write_secret_file(path, (SHARE_HEADER.format(custodian=custodian) + mnemonic + "\n").encode())
        written.append(path)
    return written


def read_share(path: Path) -> ParsedShare:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise KeyError_(f"share file {path} does not exist") from None
    except (OSError, UnicodeDecodeError):
        raise KeyError_(f"cannot read share file {path}") from None
    custodian = path.stem
    words: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            if "Custodian:" in line:
                custodian = line.split("Custodian:", 1)[1].strip() or custodian
            continue
        words.extend(line.split())
    mnemonic = " ".join(words)
    try:
        share = Share.from_mnemonic(mnemonic)
    except shamir_mnemonic.MnemonicError as exc:
        reason = (
            "invalid mnemonic checksum (a mistyped word?)"
            if "checksum" in str(exc)
            else ("unknown word" if "word" in str(exc).lower() else "not a valid SLIP-39 share")
        )
        raise KeyError_(f"share {path.name} ({custodian}): {reason}") from None
    except (ValueError, KeyError):
        raise KeyError_(f"share {path.name} ({custodian}): not a valid SLIP-39 share") from None
    return ParsedShare(custodian, mnemonic, share.identifier, share.index, share.member_threshold)


def combine(shares: list[ParsedShare], record: EscrowRecord | None) -> bytes:
    if not shares:
        raise KeyError_("no shares given")
    for share in shares:
        if record is not None and share.identifier != record.identifier:
            raise KeyError_(f"share of {share.custodian} belongs to another repository or escrow")
    needed = shares[0].threshold
    distinct = {s.index for s in shares}
    if len(distinct) < needed:
        raise KeyError_(
            f"{len(distinct)} share(s) given, {needed} needed to recover the key",
            hint="ask more custodians to provide their shares",
        )
    try:
        secret: bytes = shamir_mnemonic.combine_mnemonics([s.mnemonic for s in shares])
        return secret
    except shamir_mnemonic.MnemonicError:
        raise KeyError_("the shares do not combine: they come from different escrows") from None


def split_recovery_key(
    policy: Any,
    repo: Any,
    recovery: RecoveryKey,
    out_dir: Path,
    threshold: int | None = None,
    custodians: list[str] | None = None,
) -> list[Path]:
    """Split, write one 0600 file per custodian, record the escrow in the repository."""
    people = custodians or list(policy.escrow.custodians)
    if not people:
        raise KeyError_(
            "no custodians named", hint="set [escrow] custodians in the policy or pass --custodians"
        )
    record, shares = split(recovery, threshold or policy.escrow_threshold(), people)
    written = write_shares(out_dir, shares)
    repo.put_record(f"escrow/{record.created.replace(':', '')}-{record.identifier}.json", record.to_json())
    return written


def escrow_records(repo_or_storage: Any) -> list[EscrowRecord]:
    records = []
    for name in repo_or_storage.list_records("escrow/"):
        try:
            records.append(EscrowRecord.from_json(repo_or_storage.get_record(name)))
        except (KeyError, ValueError, TypeError):
            continue
    return records
