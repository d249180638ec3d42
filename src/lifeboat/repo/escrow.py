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
    from lifeboat.crypto.writers import RootKey
    from lifeboat.repo.records import RecordSource, RecordStore

# crypto.escrow_key (SLIP-39) is imported when used: opening a repository stays light

ESCROWED_KINDS = frozenset({"keys"})  # snapshots of these kinds are sealed to the escrow key
CONFIG_FIELD = "escrow_key"
ESCROW_KEY_RECORD = "escrow-key.json"
ROTATED = "escrow-keys/"  # records/escrow-keys/<fingerprint>.json: `keys rotate --escrow`


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


def escrow_generations(config: dict[str, Any], records: RecordSource | None) -> list[EscrowPublic]:
    """The repository's escrow keys, oldest first: the one bound in ``config`` at ``init``,
    then each `keys rotate --escrow` published in a root-signed record naming the key it
    replaces. A record the root did not sign (a plant), or that replaces no key of this
    chain, is ignored: a writer never seals key material to it."""
    first = escrow_public(config)
    if first is None or records is None:
        return [first] if first is not None else []
    rotations: dict[str, EscrowPublic] = {}
    for name in records.list_records(ROTATED):
        try:
            replaces, escrow = _read_rotation(config, records, name)
        except (IntegrityError, NotFoundError, KeyError, ValueError, TypeError):
            continue
        rotations.setdefault(replaces, escrow)
    chain = [first]
    while chain[-1].fingerprint in rotations and len(chain) <= len(rotations):
        chain.append(rotations[chain[-1].fingerprint])
    return chain


def id_salt(chain: Sequence[EscrowPublic], escrow: EscrowPublic) -> bytes:
    """What keeps the blob ids of key material apart per escrow key: nothing for the key
    bound at ``init`` (ids as they always were), the public key for a rotated one."""
    return b"" if chain and escrow.public == chain[0].public else escrow.public


def current_escrow(config: dict[str, Any], records: RecordSource | None) -> EscrowPublic | None:
    """The escrow key new key material is sealed to (the newest of ``escrow_generations``)."""
    chain = escrow_generations(config, records)
    return chain[-1] if chain else None


def rotation_record_name(escrow: EscrowPublic) -> str:
    """The record that publishes a replacement escrow key (named after its fingerprint, so a
    plant can neither squat it nor be accepted)."""
    return f"{ROTATED}{escrow.fingerprint}.json"


def _rotation_body(escrow: EscrowPublic, replaces: str) -> bytes:
    import json

    payload = {"escrow": escrow.to_json(), "replaces": replaces}
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def _read_rotation(config: dict[str, Any], records: RecordSource, name: str) -> tuple[str, EscrowPublic]:
    import json

    from lifeboat.crypto.escrow_key import EscrowPublic
    from lifeboat.crypto.signed import ObjectType, verify_by_root
    from lifeboat.repo.trust import root_public_of

    root_public = root_public_of(config)
    if root_public is None:
        raise IntegrityError("no root key to verify an escrow rotation with")
    record = records.get_record(name)
    body = str(record["body"]).encode()
    signature = base64.b64decode(str(record["signature"]), validate=True)
    verify_by_root(root_public, str(config["id"]), ObjectType.RECORD, name, body, signature)
    data = json.loads(body)
    escrow = EscrowPublic.from_json(data["escrow"])
    if escrow.repo_id != config.get("id") or rotation_record_name(escrow) != name:
        raise IntegrityError(f"{name} publishes another escrow key than its name says")
    return str(data["replaces"]), escrow


def put_escrow_rotation(
    store: RecordStore, root: RootKey, escrow: EscrowPublic, replaces: EscrowPublic
) -> None:
    """Publishes ``escrow`` as the replacement of ``replaces``, signed by the root key."""
    from lifeboat.crypto.signed import ObjectType, sign_by_root

    name = rotation_record_name(escrow)
    body = _rotation_body(escrow, replaces.fingerprint)
    signature = sign_by_root(root, ObjectType.RECORD, name, body).to_bytes()
    store.put_record(name, {"body": body.decode(), "signature": base64.b64encode(signature).decode()})


def escrowed_keyring(
    config: dict[str, Any], keyring: Keyring, records: RecordSource | None = None
) -> Keyring:
    """The keyring a backup of key material writes with: never the recovery key's packs,
    always the newest escrow key the root key published."""
    escrow = current_escrow(config, records)
    if escrow is None:
        raise ConfigError(
            "this repository has no escrow key, so key material cannot be backed up into it "
            "(it would be readable with the recovery key alone)",
            hint="initialise the repository with this version: 'lifeboat init --shares-out DIR'",
        )
    return keyring.for_escrow(
        escrow.public, escrow.threshold, id_salt(escrow_generations(config, records), escrow)
    )


def unlock_escrow(
    config: dict[str, Any],
    keyring: Keyring,
    shares: Sequence[ParsedShare],
    records: RecordSource | None = None,
) -> tuple[str, ...]:
    """Lets ``keyring`` read key material once the escrow shares recombine to the escrow
    key they belong to (the current one, or one `keys rotate --escrow` replaced: that one
    opens only the key material sealed before the rotation); returns the custodians whose
    shares opened it. Refusals are one-line KeyError_s."""
    from lifeboat.crypto.escrow_key import open_escrow

    chain = escrow_generations(config, records)
    if not chain:
        return ()
    theirs = [e for e in chain if shares and e.identifier == shares[0].identifier]
    escrow = theirs[0] if theirs else chain[-1]
    opener = open_escrow(escrow, shares)
    keyring.unlock_escrow(opener, escrow.threshold, id_salt(chain, escrow))
    return opener.custodians


def reshared_key_material(
    config: dict[str, Any], keyring: Keyring, custodians: Sequence[str], records: RecordSource | None = None
) -> dict[str, str] | None:
    """The key-material escrow shares to write next to new recovery-key shares (a rotation
    or re-split): new shares of the same escrow key for ``custodians``. None when the
    repository has no escrow key; refused when it has one the shares brought did not open,
    because share files without it, handed out to replace the old ones, would lose the key
    material for good."""
    escrow = current_escrow(config, records)
    if escrow is None:
        return None
    opener = keyring.escrow
    if opener is None or opener.escrow.public != escrow.public:
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
    """`check`: the escrow key in ``config`` against the root-signed record (with the
    recovery key), and every escrow-key rotation record the root did not sign (a plant:
    writers ignore it, `check` names it)."""
    return _config_escrow_problems(config, keyring, records) + rotation_problems(config, records)


def rotation_problems(config: dict[str, Any], records: RecordSource) -> list[Problem]:
    """Escrow-key rotation records that are not root-signed for their name (ignored by
    every writer and reader): one ``escrow-key`` problem each."""
    if config.get(CONFIG_FIELD) is None:
        return []
    problems = []
    for name in records.list_records(ROTATED):
        try:
            _read_rotation(config, records, name)
        except NotFoundError:
            continue
        except (IntegrityError, KeyError, ValueError, TypeError) as exc:
            why = exc.message if isinstance(exc, IntegrityError) else "damaged"
            problems.append(
                Problem(
                    "escrow-key", f"records/{name}", f"escrow-key rotation record refused: {why}; ignored"
                )
            )
    return problems


def _config_escrow_problems(config: dict[str, Any], keyring: Keyring, records: RecordSource) -> list[Problem]:
    """With the recovery key: the escrow key in ``config`` must be the one the root key
    signed at ``init``; another (a storage-level attacker's, which backups of key material
    would then seal to) is reported. Nothing to check without the recovery key."""
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
