"""Which key seals a snapshot's packs: the recovery key, or for key material the escrow key
whose private half exists only as custodians' SLIP-39 shares (issue #14).

The choice is the repository's, made from the snapshot's kind (``ESCROWED_KINDS``), not the
reader's: a restore that calls the asset something else still meets packs only the shares
open. The escrow public key is bound in ``config`` at ``init`` (``escrow_key``) and, for the
root-signed record readers will pin once writer registries land, in ``records/escrow-key.json``
signed by the root key (derived from the recovery key).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lifeboat.errors import ConfigError, IntegrityError, KeyError_, NotFoundError
from lifeboat.repo.keyring import Keyring
from lifeboat.repo.model import Problem

if TYPE_CHECKING:
    from lifeboat.crypto.escrow import ParsedShare
    from lifeboat.crypto.escrow_key import EscrowPublic
    from lifeboat.crypto.keys import RecoveryKey
    from lifeboat.repo.records import RecordSource, RecordStore

# crypto.escrow_key (SLIP-39) is imported when used: opening a repository stays light

ESCROWED_KINDS = frozenset({"keys"})  # snapshots of these kinds are sealed to the escrow key
CONFIG_FIELD = "escrow_key"
ESCROW_KEY_RECORD = "escrow-key.json"


def recipient_for(kind: str) -> str:
    """Who can open a snapshot of ``kind``: "escrow" (M custodians together) or "recovery"."""
    return "escrow" if kind in ESCROWED_KINDS else "recovery"


def escrow_public(config: dict[str, Any]) -> EscrowPublic | None:
    """The escrow key bound in the repository's config, if it has one."""
    from lifeboat.crypto.escrow_key import EscrowPublic

    data = config.get(CONFIG_FIELD)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise IntegrityError("the repository's escrow key entry is damaged")
    escrow = EscrowPublic.from_json(data)
    if escrow.repo_id != config.get("id"):
        raise IntegrityError("the repository's escrow key belongs to another repository")
    return escrow


def escrowed_keyring(config: dict[str, Any], keyring: Keyring) -> Keyring:
    """The keyring a backup of key material writes with: never the recovery key's packs."""
    escrow = escrow_public(config)
    if escrow is None:
        raise ConfigError(
            "this repository has no escrow key, so key material cannot be backed up into it "
            "(it would be readable with the recovery key alone)",
            hint="initialise the repository with this version: 'lifeboat init --shares-out DIR'",
        )
    return keyring.for_escrow(escrow.public, escrow.threshold)


def unlock_escrow(config: dict[str, Any], keyring: Keyring, shares: Sequence[ParsedShare]) -> tuple[str, ...]:
    """Lets ``keyring`` read key material once the escrow shares recombine to the escrow
    key; returns the custodians whose shares opened it. Refusals are one-line KeyError_s."""
    from lifeboat.crypto.escrow_key import open_escrow

    escrow = escrow_public(config)
    if escrow is None:
        return ()
    opener = open_escrow(escrow, shares)
    keyring.unlock_escrow(opener, escrow.threshold)
    return opener.custodians


def reshared_key_material(
    config: dict[str, Any], keyring: Keyring, custodians: Sequence[str]
) -> dict[str, str] | None:
    """The key-material escrow shares to write next to new recovery-key shares (a rotation
    or re-split): new shares of the same escrow key for ``custodians``. None when the
    repository has no escrow key; refused when it has one the shares brought did not open,
    because share files without it, handed out to replace the old ones, would lose the key
    material for good."""
    escrow = escrow_public(config)
    if escrow is None:
        return None
    opener = keyring.escrow
    if opener is None:
        raise KeyError_(
            "new share files must also carry the key-material escrow shares, and the shares "
            "given did not open the escrow key",
            hint="pass --share FILE of M custodians (their files hold both shares)",
        )
    shares = opener.reshare()
    strangers = [name for name in custodians if name not in shares]
    if strangers:
        raise KeyError_(
            f"{', '.join(strangers)} hold(s) no share of the key-material escrow key "
            f"({escrow.threshold}-of-{len(escrow.custodians)}: {', '.join(escrow.custodians)})",
            hint="split among the escrow's custodians",
        )
    return {name: shares[name] for name in custodians}


def escrow_threshold(config: dict[str, Any]) -> int:
    """How many custodians' shares key material needs here (0: no escrow key)."""
    data = config.get(CONFIG_FIELD)
    return int(data.get("threshold", 0)) if isinstance(data, dict) else 0


def _record_body(escrow: EscrowPublic) -> bytes:
    import json

    return json.dumps(escrow.to_json(), sort_keys=True, separators=(",", ":")).encode()


def escrow_problems(config: dict[str, Any], keyring: Keyring, records: RecordSource) -> list[Problem]:
    """`check` with the recovery key: the escrow key in ``config`` must be the one the root
    key signed at ``init``; another (a storage-level attacker's, which backups of key
    material would then seal to) is reported. Nothing to check without the recovery key."""
    from lifeboat.crypto.signed import ObjectType, verify_by_root
    from lifeboat.crypto.writers import RootKey

    first, current = keyring.first_recovery, keyring.recovery
    if first is None or current is None or config.get(CONFIG_FIELD) is None:
        return []
    where = f"config ({CONFIG_FIELD})"
    try:
        escrow = escrow_public(config)
        if escrow is None:
            return []
        record = records.get_record(ESCROW_KEY_RECORD)
        body = str(record["escrow"]).encode()
        signature = base64.b64decode(str(record["signature"]), validate=True)
        root = RootKey.derive(str(config["id"]), first.secret, current.public)
        verify_by_root(root.public, root.repo_id, ObjectType.RECORD, ESCROW_KEY_RECORD, body, signature)
    except NotFoundError:
        return [Problem("escrow-key", where, "no root-signed escrow-key record vouches for the escrow key")]
    except (IntegrityError, KeyError, ValueError, TypeError) as exc:
        return [Problem("escrow-key", where, f"escrow key record: {exc}")]
    if body != _record_body(escrow):
        return [
            Problem(
                "escrow-key",
                where,
                "the escrow key in config is not the one the root key signed: key material "
                "backed up since may be sealed to a key nobody holds shares of",
            )
        ]
    return []


def put_signed_escrow_record(store: RecordStore, escrow: EscrowPublic, recovery: RecoveryKey) -> None:
    """``records/escrow-key.json``: the escrow public key signed by the repository's root key
    (derived from the first recovery key), so a reader pinning the root public key refuses an
    escrow key a backup host planted (crypto/signed.py ``verify_by_root``)."""
    from lifeboat.crypto.signed import ObjectType, sign_by_root
    from lifeboat.crypto.writers import RootKey

    body = _record_body(escrow)
    root = RootKey.derive(escrow.repo_id, recovery.secret, recovery.public)
    signature = sign_by_root(root, ObjectType.RECORD, ESCROW_KEY_RECORD, body).to_bytes()
    store.put_record(
        ESCROW_KEY_RECORD,
        {
            "escrow": body.decode(),
            "root_public": base64.b64encode(root.public).decode(),
            "signature": base64.b64encode(signature).decode(),
        },
    )
