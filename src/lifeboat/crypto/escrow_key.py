"""The escrow key: key-material assets (``kind = "keys"``) are encrypted to it, and its
private half exists only as M-of-N SLIP-39 shares (issue #14).

Multi-party authorisation for key material is then a property of the ciphertext, not a CLI
rule: no key file opens a ``keys`` asset whatever a policy calls it, because no key file
holds this key. ``generate_escrow`` makes a random master secret, splits it, and returns
only the public half and the shares; ``decrypt_with_shares`` recombines M shares inside the
call and returns the plaintext, never the key. (Python cannot wipe memory: the secret lives
in this process's heap until garbage-collected, the same as every key here.)

The X25519 private key is HKDF(master secret, salt = repository id, info = ESCROW_INFO),
so the SLIP-39 secret is never used directly as a key and two repositories never share one.
Sealed object: ``"LBES" version:u8 wrapped_len:u16be wrap_key(escrow public, DEK,
"escrow/" ‖ context) envelope(DEK, plaintext, aad = context)``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import shamir_mnemonic
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from shamir_mnemonic.share import Share

from lifeboat import clock
from lifeboat.crypto.envelope import Cipher, open_envelope, public_bytes, unwrap_key, wrap_key
from lifeboat.crypto.escrow import ParsedShare, combine, split_problem
from lifeboat.errors import IntegrityError, KeyError_

ESCROW_INFO = b"lifeboat/escrow-key/v1"
ESCROW_MAGIC = b"LBES"
ESCROW_VERSION = 1


def escrow_fingerprint(public: bytes) -> str:
    return hashlib.sha256(b"lifeboat-escrow-key/" + public).hexdigest()[:32]


@dataclass(frozen=True)
class EscrowPublic:
    """What the repository publishes about the escrow key: enough to encrypt to it and to
    check that shares belong to it, nothing that decrypts."""

    repo_id: str
    public: bytes
    identifier: int  # the SLIP-39 identifier every share of this escrow carries
    threshold: int
    custodians: tuple[str, ...]
    created: str

    @property
    def fingerprint(self) -> str:
        return escrow_fingerprint(self.public)

    def to_json(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "public": base64.b64encode(self.public).decode(),
            "fingerprint": self.fingerprint,
            "identifier": self.identifier,
            "threshold": self.threshold,
            "custodians": list(self.custodians),
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EscrowPublic:
        try:
            public = base64.b64decode(str(data["public"]), validate=True)
            escrow = cls(
                str(data["repo_id"]),
                public,
                int(data["identifier"]),
                int(data["threshold"]),
                tuple(str(c) for c in data["custodians"]),
                str(data.get("created", "")),
            )
        except (KeyError, ValueError, TypeError):
            raise IntegrityError("escrow key record is damaged") from None
        if len(public) != 32 or data.get("fingerprint") not in (None, escrow.fingerprint):
            raise IntegrityError("escrow key record is damaged")
        return escrow


def _private(repo_id: str, master: bytes) -> X25519PrivateKey:
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=repo_id.encode(), info=ESCROW_INFO).derive(master)
    return X25519PrivateKey.from_private_bytes(seed)


def generate_escrow(
    repo_id: str, threshold: int, custodians: Sequence[str]
) -> tuple[EscrowPublic, dict[str, str]]:
    """A new escrow key as its public half and one SLIP-39 mnemonic per custodian."""
    people = list(custodians)
    problem = split_problem(threshold, people)
    if problem is not None:
        raise KeyError_(problem)
    master = secrets.token_bytes(32)
    mnemonics = shamir_mnemonic.generate_mnemonics(1, [(threshold, len(people))], master)[0]
    escrow = EscrowPublic(
        repo_id=repo_id,
        public=public_bytes(_private(repo_id, master)),
        identifier=Share.from_mnemonic(mnemonics[0]).identifier,
        threshold=threshold,
        custodians=tuple(people),
        created=clock.now().isoformat(timespec="seconds"),
    )
    return escrow, dict(zip(people, mnemonics, strict=True))


class PendingEscrow:
    """An escrow key to be made for a repository not created yet (its id salts the key):
    ``bind`` is given the new id, returns the public record for the repository's config and
    keeps only the custodians' mnemonics, for the share files; the whole key is never kept."""

    def __init__(self, threshold: int, custodians: Sequence[str]) -> None:
        problem = split_problem(threshold, list(custodians))
        if problem is not None:
            raise KeyError_(problem)
        self.threshold = threshold
        self.custodians = list(custodians)
        self.public: EscrowPublic | None = None
        self.shares: dict[str, str] = {}

    def bind(self, repo_id: str) -> dict[str, Any]:
        """Makes the escrow key of repository ``repo_id``; its public record."""
        self.public, self.shares = generate_escrow(repo_id, self.threshold, self.custodians)
        return self.public.to_json()

    def __repr__(self) -> str:  # never print the mnemonics
        return f"PendingEscrow({self.threshold}-of-{len(self.custodians)})"


def _context(context: bytes) -> bytes:
    return b"escrow/" + context


def encrypt_to_escrow(escrow: EscrowPublic, plaintext: bytes, context: bytes) -> bytes:
    """``plaintext`` readable only by M custodians together; ``context`` (e.g. the snapshot
    and file it belongs to) is authenticated, so a ciphertext cannot be moved elsewhere."""
    dek = os.urandom(32)
    wrapped = wrap_key(escrow.public, dek, _context(context))
    return (
        ESCROW_MAGIC
        + bytes([ESCROW_VERSION])
        + struct.pack(">H", len(wrapped))
        + wrapped
        + Cipher(dek).seal(plaintext, context)
    )


def _quorum(escrow: EscrowPublic, shares: Sequence[ParsedShare]) -> list[ParsedShare]:
    """Exactly ``threshold`` distinct shares of this escrow (SLIP-39 refuses more or fewer)."""
    distinct: dict[int, ParsedShare] = {}
    for share in shares:
        if share.identifier != escrow.identifier:
            raise KeyError_(f"the share of {share.custodian} does not belong to this escrow key")
        distinct.setdefault(share.index, share)
    if len(distinct) < escrow.threshold:
        raise KeyError_(
            f"{len(distinct)} custodian share(s) given, {escrow.threshold} needed to open key material",
            hint="ask more custodians to provide their shares",
        )
    return list(distinct.values())[: escrow.threshold]


class EscrowOpener:
    """The escrow key recombined from M shares, for one process: it unwraps the data keys
    of escrowed packs and never hands out the private key (``open_escrow`` makes it)."""

    def __init__(
        self,
        escrow: EscrowPublic,
        private: X25519PrivateKey,
        custodians: tuple[str, ...],
        mnemonics: Sequence[str] = (),
    ) -> None:
        self.escrow = escrow
        self._private = private
        self.custodians = custodians  # whose shares opened it (names only, for the audit)
        self._mnemonics = list(mnemonics)

    def reshare(self) -> dict[str, str]:
        """New shares of the same escrow key for every custodian of the escrow, under the same
        SLIP-39 identifier (so the published record still names them); the shares that opened
        it keep working on their own, a mix of old and new does not combine."""
        groups = shamir_mnemonic.decode_mnemonics(self._mnemonics)
        ems = shamir_mnemonic.recover_ems(groups)
        people = self.escrow.custodians
        split = shamir_mnemonic.split_ems(1, [(self.escrow.threshold, len(people))], ems)[0]
        return dict(zip(people, (share.mnemonic() for share in split), strict=True))

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """A data key ``wrap_to_escrow`` wrapped under ``context`` (IntegrityError otherwise)."""
        return unwrap_key(self._private, wrapped, _context(context))

    def __repr__(self) -> str:  # never print key bytes
        return f"EscrowOpener({self.escrow.fingerprint})"


def wrap_to_escrow(public: bytes, data_key: bytes, context: bytes) -> bytes:
    """``data_key`` wrapped so that only the escrow key (M custodians together) unwraps it."""
    return wrap_key(public, data_key, _context(context))


def open_escrow(escrow: EscrowPublic, shares: Sequence[ParsedShare]) -> EscrowOpener:
    """The escrow key from at least its threshold of its own shares: fewer, shares of another
    escrow (the recovery-key escrow's among them) or shares that recombine to another key
    are refused with a one-line KeyError_."""
    quorum = _quorum(escrow, shares)
    private = _private(escrow.repo_id, combine(quorum, None))
    if not hmac.compare_digest(public_bytes(private), escrow.public):
        raise KeyError_("the shares recombine to another key than this escrow key")
    return EscrowOpener(escrow, private, tuple(s.custodian for s in quorum), [s.mnemonic for s in quorum])


def decrypt_with_shares(
    escrow: EscrowPublic, shares: Sequence[ParsedShare], sealed: bytes, context: bytes
) -> bytes:
    """The plaintext, once at least the escrow's threshold of its shares recombine to the key."""
    private = _private(escrow.repo_id, combine(_quorum(escrow, shares), None))
    if not hmac.compare_digest(public_bytes(private), escrow.public):
        raise KeyError_("the shares recombine to another key than this escrow key")
    if len(sealed) < 7 or sealed[:4] != ESCROW_MAGIC or sealed[4] != ESCROW_VERSION:
        raise IntegrityError("escrowed object is damaged (bad magic or version)")
    (wrapped_len,) = struct.unpack(">H", sealed[5:7])
    if len(sealed) <= 7 + wrapped_len:
        raise IntegrityError("escrowed object is truncated")
    dek = unwrap_key(private, sealed[7 : 7 + wrapped_len], _context(context))
    return open_envelope(dek, sealed[7 + wrapped_len :], context)
