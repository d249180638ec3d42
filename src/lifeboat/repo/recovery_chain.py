"""Recovery-key rotation: a chain of records that lets each new recovery key reach the old ones.

Packs are immutable, so data keys wrapped for an old recovery key cannot be re-wrapped.
Instead, rotating writes ``recovery/<generation>.json`` holding the new public key and the
*previous* recovery secret wrapped for the new key. The newest key therefore opens every
snapshot ever written, while data written after the rotation is wrapped for the new key
only (an old, possibly leaked key cannot read it).

A record is plaintext and could be written by anyone holding a backup key, so it is never
trusted on its own: following the chain from a key must end, through successful AEAD
unwraps whose fingerprints match each record, at the fingerprint in the repository config.
A forged record cannot produce a secret it never had.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lifeboat.crypto.envelope import unwrap_key, wrap_key
from lifeboat.crypto.keys import RecoveryKey, recovery_fingerprint
from lifeboat.errors import IntegrityError, KeyError_
from lifeboat.repo.records import RecordSource, RecordStore, escrow_records

if TYPE_CHECKING:
    from lifeboat.crypto.escrow import EscrowRecord

CHAIN_CONTEXT = b"recovery-chain"
PREFIX = "recovery/"

Records = RecordSource


def _rotation_records(records: Records) -> list[dict[str, Any]]:
    found = []
    for name in records.list_records(PREFIX):
        try:
            found.append(records.get_record(name))
        except (ValueError, KeyError, IntegrityError):
            continue
    return found


def root_fingerprint(config: dict[str, Any]) -> str:
    """The fingerprint of the recovery key ``init`` wrote (the chain's end)."""
    fp = config.get("recovery_fingerprint")
    if fp:
        return str(fp)
    return recovery_fingerprint(base64.b64decode(config["recovery_public"]))


def known_fingerprints(records: Records) -> set[str]:
    """Every fingerprint a recovery key of this repository may have (unverified claims)."""
    claims = {str(r.get("recovery_fingerprint")) for r in _rotation_records(records)}
    return {root_fingerprint(records.config)} | claims


def current_fingerprint(records: Records) -> str:
    """The newest recovery key's fingerprint: the one rotation must start from."""
    rotations = sorted(_rotation_records(records), key=lambda r: int(r.get("generation", 0)))
    return str(rotations[-1]["recovery_fingerprint"]) if rotations else root_fingerprint(records.config)


def resolve_chain(records: Records, key: RecoveryKey) -> list[RecoveryKey]:
    """``key`` followed by each older recovery key it reaches, ending at the config's root.

    Raises a one-line KeyError_ when the key does not belong to this repository.
    """
    config = records.config
    root = root_fingerprint(config)
    by_fingerprint = {str(r.get("recovery_fingerprint")): r for r in _rotation_records(records)}
    chain = [key]
    while chain[-1].fingerprint() != root:
        record = by_fingerprint.get(chain[-1].fingerprint())
        if record is None or len(chain) > len(by_fingerprint):
            raise KeyError_(
                "the recovery key does not belong to this repository",
                hint="use the key or shares from 'lifeboat init' or the last 'keys rotate --recovery'",
            )
        try:
            secret = unwrap_key(
                chain[-1].private, base64.b64decode(record["previous_wrapped"]), CHAIN_CONTEXT
            )
        except (IntegrityError, KeyError, ValueError):
            raise KeyError_("the recovery-key rotation record is damaged or forged") from None
        previous = RecoveryKey.from_secret(str(config["id"]), secret)
        if previous.fingerprint() != record.get("previous_fingerprint"):
            raise KeyError_("the recovery-key rotation record is damaged or forged")
        chain.append(previous)
    if key.repo_id != config["id"]:
        raise KeyError_("the recovery key does not belong to this repository")
    return chain


def rotation_record(records: Records, current: RecoveryKey, new: RecoveryKey) -> tuple[str, dict[str, Any]]:
    """The record that links ``new`` to ``current``; name and content."""
    generation = len(_rotation_records(records)) + 1
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return f"{PREFIX}{generation:04d}.json", {
        "generation": generation,
        "created": created,
        "recovery_public": base64.b64encode(new.public).decode(),
        "recovery_fingerprint": new.fingerprint(),
        "previous_fingerprint": current.fingerprint(),
        "previous_wrapped": base64.b64encode(wrap_key(new.public, current.secret, CHAIN_CONTEXT)).decode(),
    }


def link_recovery_key(store: RecordStore, current: RecoveryKey, new: RecoveryKey) -> None:
    """Writes the rotation record that makes ``new`` the newest recovery key."""
    name, record = rotation_record(store, current, new)
    store.put_record(name, record)


class UnlockRecords:
    """What unlocking a repository consults (``crypto.unlock.KeyRecords``), read when asked."""

    def __init__(self, source: RecordSource) -> None:
        self.source = source

    @property
    def repo_id(self) -> str:
        """The repository id a recovered key must carry."""
        return str(self.source.config["id"])

    def escrows(self) -> list[EscrowRecord]:
        """The escrow splits recorded in the repository."""
        return escrow_records(self.source)

    def recovery_fingerprints(self) -> set[str]:
        """Every fingerprint a recovery key of this repository may have."""
        return known_fingerprints(self.source)
