"""Escrow of the recovery key: M-of-N SLIP-39 mnemonic shares held by custodians.

The repository records who holds shares, the threshold, the SLIP-39 identifier and the
recovery key's public fingerprint: enough to check a share belongs here, never the secret.
Error messages never quote mnemonic words (the library's own messages do, so they are
replaced here).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import shamir_mnemonic
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from shamir_mnemonic.share import Share

from lifeboat.crypto.envelope import Cipher
from lifeboat.crypto.keys import RecoveryKey, write_secret_file
from lifeboat.errors import IntegrityError, KeyError_

if TYPE_CHECKING:
    from lifeboat.policy import Policy

SHARE_HEADER = "# lifeboat recovery-key share (SLIP-39). Keep offline. Custodian: {custodian}\n"
# A second section of the same file: the custodian's share of the escrow key that key
# material (``kind = "keys"``) is sealed to (crypto/escrow_key.py). One file per custodian
# keeps "bring your share" one act; the two secrets stay separate SLIP-39 splits.
KEY_MATERIAL_MARK = "# lifeboat key-material escrow share"
KEY_MATERIAL_HEADER = KEY_MATERIAL_MARK + " (SLIP-39). Keep offline. Custodian: {custodian}\n"
RECOVERY = "recovery"
KEY_MATERIAL = "key-material"


@dataclass(frozen=True)
class EscrowRecord:
    """What the repository records about an escrow split (never a secret)."""

    threshold: int
    custodians: list[str]
    identifier: int
    fingerprint: str
    created: str

    def to_json(self) -> dict[str, Any]:
        """The record as stored."""
        return {
            "threshold": self.threshold,
            "custodians": self.custodians,
            "identifier": self.identifier,
            "fingerprint": self.fingerprint,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EscrowRecord:
        """The record from its stored form."""
        return cls(
            int(data["threshold"]),
            list(data["custodians"]),
            int(data["identifier"]),
            str(data["fingerprint"]),
            str(data.get("created", "")),
        )


@dataclass(frozen=True)
class ParsedShare:
    """One custodian's share, read and checked."""

    custodian: str
    mnemonic: str
    identifier: int
    index: int
    threshold: int
    purpose: str = RECOVERY  # or KEY_MATERIAL: a share of the escrow key of key material


MAX_SHARES = 16  # SLIP-39's limit on the members of a group


def split_problem(threshold: int, custodians: list[str]) -> str | None:
    """Why SLIP-39 cannot split the key M-of-N for these custodians; None when it can.
    Checked before anything is written (init, escrow split) and by `policy check`."""
    n = len(custodians)
    if n == 0:
        return "no custodians named"
    if len(set(custodians)) != n:
        return "custodian names must be unique"
    if not 1 <= threshold <= n <= MAX_SHARES:
        return f"cannot split into {threshold}-of-{n} shares (1 <= M <= N <= {MAX_SHARES})"
    if threshold == 1 and n > 1:
        return (
            f"SLIP-39 cannot make 1-of-{n} shares (each share alone would be the whole key): "
            "set a threshold of 2 or more, or name one custodian"
        )
    return None


def split(
    recovery: RecoveryKey, threshold: int, custodians: list[str]
) -> tuple[EscrowRecord, dict[str, str]]:
    """M-of-N SLIP-39 mnemonics of the recovery key and the record describing them."""
    problem = split_problem(threshold, custodians)
    if problem is not None:
        raise KeyError_(problem)
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


SHARE_ENCRYPTED_MARK = "# encrypted: scrypt+aes-256-gcm\n"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


def _passphrase_key(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(passphrase)


def seal_mnemonic(mnemonic: str, custodian: str, passphrase: bytes) -> str:
    """The share's words encrypted under the custodian's passphrase (scrypt, then AEAD)."""
    salt = os.urandom(16)
    sealed = Cipher(_passphrase_key(passphrase, salt)).seal(mnemonic.encode(), custodian.encode())
    return base64.b64encode(salt + sealed).decode()


def open_mnemonic(blob: str, custodian: str, passphrase: bytes) -> str | None:
    """The words, or None when the passphrase is wrong."""
    raw = base64.b64decode(blob)
    try:
        return Cipher(_passphrase_key(passphrase, raw[:16])).open(raw[16:], custodian.encode()).decode()
    except IntegrityError:
        return None


def _section(header: str, mnemonic: str, custodian: str, passphrase: bytes | None) -> str:
    text = header.format(custodian=custodian)
    if passphrase:
        return text + SHARE_ENCRYPTED_MARK + seal_mnemonic(mnemonic, custodian, passphrase) + "\n"
    return text + mnemonic + "\n"


def write_shares(
    out_dir: Path,
    shares: dict[str, str],
    passphrases: dict[str, bytes] | None = None,
    key_material: dict[str, str] | None = None,
) -> list[Path]:
    """One 0600 file per custodian; encrypted for those who gave a passphrase.
    ``key_material``: each custodian's share of the escrow key, as a second section."""
    written = []
    for custodian, mnemonic in shares.items():
        path = out_dir / f"{custodian}.share"
        passphrase = (passphrases or {}).get(custodian)
        text = _section(SHARE_HEADER, mnemonic, custodian, passphrase)
        if key_material is not None:
            text += _section(KEY_MATERIAL_HEADER, key_material[custodian], custodian, passphrase)
        write_secret_file(path, text.encode())
        written.append(path)
    return written


def parse_mnemonic(words: str, custodian: str, label: str, purpose: str = RECOVERY) -> ParsedShare:
    """A share from its words; the error names the share and never quotes a word."""
    mnemonic = " ".join(words.split())
    try:
        share = Share.from_mnemonic(mnemonic)
    except shamir_mnemonic.MnemonicError as exc:
        reason = (
            "invalid mnemonic checksum (a mistyped word?)"
            if "checksum" in str(exc)
            else ("unknown word" if "word" in str(exc).lower() else "not a valid SLIP-39 share")
        )
        raise KeyError_(f"share {label} ({custodian}): {reason}") from None
    except (ValueError, KeyError):
        raise KeyError_(f"share {label} ({custodian}): not a valid SLIP-39 share") from None
    return ParsedShare(custodian, mnemonic, share.identifier, share.index, share.member_threshold, purpose)


AskPassphrase = Callable[[str], bytes | None]


def read_share(
    path: Path, passphrases: Sequence[bytes] = (), ask_passphrase: AskPassphrase | None = None
) -> ParsedShare:
    """A share file's first share (the recovery key's, when the file has one)."""
    return read_share_file(path, passphrases, ask_passphrase)[0]


@dataclass
class _Section:
    purpose: str
    custodian: str
    encrypted: bool = False
    body: list[str] = field(default_factory=list)


def _sections(text: str, custodian: str) -> list[_Section]:
    sections = [_Section(RECOVERY, custodian)]
    for line in text.splitlines(keepends=True):
        if line.startswith(KEY_MATERIAL_MARK):
            sections.append(_Section(KEY_MATERIAL, custodian))
        current = sections[-1]
        if line.startswith("#"):
            if "Custodian:" in line:
                current.custodian = line.split("Custodian:", 1)[1].strip() or current.custodian
            current.encrypted = current.encrypted or line == SHARE_ENCRYPTED_MARK
            continue
        current.body.append(line)
    return [s for s in sections if s.body and "".join(s.body).strip()] or sections[:1]


def read_share_file(
    path: Path, passphrases: Sequence[bytes] = (), ask_passphrase: AskPassphrase | None = None
) -> list[ParsedShare]:
    """Every share in a share file (the recovery key's, then the key-material escrow's when
    the file has that section); encrypted ones opened with a given passphrase or one asked
    for (asked once per file: both sections use the custodian's one passphrase)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise KeyError_(f"share file {path} does not exist") from None
    except (OSError, UnicodeDecodeError):
        raise KeyError_(f"cannot read share file {path}") from None
    shares: list[ParsedShare] = []
    known = list(passphrases)
    for section in _sections(text, path.stem):
        words = "".join(section.body)
        if section.encrypted:
            words, used = _decrypt_share(words.strip(), section.custodian, path.name, known, ask_passphrase)
            if used not in known:
                known.append(used)
        shares.append(parse_mnemonic(words, section.custodian, path.name, section.purpose))
    return shares


def _decrypt_share(
    blob: str,
    custodian: str,
    label: str,
    passphrases: Sequence[bytes],
    ask_passphrase: AskPassphrase | None,
) -> tuple[str, bytes]:
    try:
        for passphrase in passphrases:
            words = open_mnemonic(blob, custodian, passphrase)
            if words is not None:
                return words, passphrase
        asked = ask_passphrase(custodian) if ask_passphrase else None
        words = open_mnemonic(blob, custodian, asked) if asked else None
    except (ValueError, IndexError):
        raise KeyError_(f"share {label} ({custodian}): the encrypted share is damaged") from None
    if words is not None and asked is not None:
        return words, asked
    if not passphrases and asked is None:
        raise KeyError_(
            f"share {label} ({custodian}) is protected by a passphrase",
            hint="pass --passphrase-file FILE (the custodian's passphrase), or run on a terminal",
        )
    raise KeyError_(f"share {label} ({custodian}): wrong passphrase")


def combine(shares: list[ParsedShare], record: EscrowRecord | None) -> bytes:
    """The recovery secret from enough shares of one escrow (KeyError_ otherwise)."""
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


class EscrowStore(Protocol):
    """Where an escrow split is recorded (``Repository.put_escrow``): passed in, so crypto/
    never imports repo/ and the record's name and layout stay in ``repo/records.py``."""

    def put_escrow(self, record: EscrowRecord) -> None:
        """Records the split (threshold, custodians, identifier, fingerprint; no secret)."""
        ...


def split_recovery_key(
    policy: Policy,
    repo: EscrowStore,
    recovery: RecoveryKey,
    out_dir: Path,
    threshold: int | None = None,
    custodians: list[str] | None = None,
    passphrases: dict[str, bytes] | None = None,
    key_material: dict[str, str] | None = None,
) -> list[Path]:
    """Split, write one 0600 file per custodian, record the escrow in the repository;
    ``key_material``: each custodian's share of the key-material escrow key, written into
    the same file (a second section)."""
    people = custodians or list(policy.escrow.custodians)
    if not people:
        raise KeyError_(
            "no custodians named", hint="set [escrow] custodians in the policy or pass --custodians"
        )
    unknown = set(passphrases or {}) - set(people)
    if unknown:
        raise KeyError_(f"passphrase given for {', '.join(sorted(unknown))}, who is not a custodian")
    targets = [out_dir / f"{name}.share" for name in people]
    existing = [path for path in targets if os.path.lexists(path)]
    if existing:
        raise KeyError_(
            f"{existing[0]} already exists; refusing to overwrite a share",
            hint="choose another output directory, or move the old shares away first",
        )
    record, shares = split(recovery, threshold or policy.escrow_threshold(), people)
    try:
        written = write_shares(out_dir, shares, passphrases, key_material)
        repo.put_escrow(record)
    except BaseException:
        # half a set of shares, or shares of an escrow the repository does not record,
        # would be handed to custodians and fail them at recovery time
        for path in targets:
            path.unlink(missing_ok=True)
        raise
    return written
