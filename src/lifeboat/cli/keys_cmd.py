"""`lifeboat keys rotate [--recovery]`: new keys; the old backup key stops adding data."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import console, print_json, run_context
from lifeboat.cli.credentials import (
    CustodianPassphraseOption,
    PassphraseOption,
    RecoveryKeyOption,
    ShareOption,
    credentials_options,
    custodian_passphrases,
)
from lifeboat.errors import ConfigError


@dataclass(frozen=True)
class EscrowSplit:
    """How the new recovery key is shared out (None: the policy's escrow settings)."""

    threshold: int | None
    custodians: list[str] | None
    passphrases: dict[str, bytes]


keys_app = typer.Typer(help="Repository keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def rotate(
    ctx: typer.Context,
    recovery: bool = typer.Option(
        False, "--recovery", help="Also replace the recovery key (needs the current one or its shares)."
    ),
    recovery_key: RecoveryKeyOption = None,
    share: ShareOption = None,
    passphrase_file: PassphraseOption = None,
    recovery_key_out: Path = typer.Option(
        None, "--recovery-key-out", help="With --recovery: write the new recovery key here (0600)."
    ),
    shares_out: Path = typer.Option(
        None, "--shares-out", help="With --recovery: split the new recovery key into custodian shares."
    ),
    threshold: int = typer.Option(None, "--threshold", help="M for the new shares (default: policy)."),
    custodians: str = typer.Option(None, "--custodians", help="Comma-separated names (default: policy)."),
    custodian_passphrase: CustodianPassphraseOption = None,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Write a new backup key and retire the old one; snapshots written before stay restorable.

    With --recovery, a new recovery key too: the new key (or its shares) opens every
    snapshot, old and new; the old recovery key cannot read anything written afterwards.
    """
    from lifeboat import runtime
    from lifeboat.crypto.keys import RecoveryKey, load_backup_key

    policy = run_context(ctx).policy()
    if recovery and recovery_key_out is None and shares_out is None:
        raise ConfigError(
            "keys rotate --recovery needs somewhere to put the new recovery key",
            hint="pass --recovery-key-out FILE or --shares-out DIR",
        )
    if not recovery and (recovery_key_out or shares_out):
        raise ConfigError("--recovery-key-out and --shares-out only make sense with --recovery")
    keyfile = Path(policy.repository.keyfile)
    old = load_backup_key(keyfile)
    result: dict[str, Any] = {"old_key_id": old.key_id, "keyfile": str(keyfile)}
    recovery_public = old.recovery_public
    if recovery:
        creds = credentials_options(recovery_key, share, passphrase_file)
        reader = runtime.open_for_read(policy, creds, purpose="keys rotate --recovery")
        names = [c.strip() for c in custodians.split(",")] if custodians else None
        split = EscrowSplit(threshold, names, custodian_passphrases(custodian_passphrase))
        new_recovery: RecoveryKey = rotate_recovery(
            policy, reader, recovery_key_out, shares_out, split, result
        )
        recovery_public = new_recovery.public
    repo = runtime.open_for_write(policy)
    repo.ensure_writable()
    new = swap_backup_key(repo, keyfile, old, recovery_public)
    result["new_key_id"] = new.key_id
    runtime.audit_log(policy, repo).append(
        "keys-rotate",
        old_key_id=old.key_id,
        new_key_id=new.key_id,
        **({"recovery_fingerprint": result["recovery_fingerprint"]} if recovery else {}),
    )
    if json_out:
        print_json(result)
        return
    console.print(
        f"backup key rotated: {old.key_id} -> {new.key_id} ({keyfile}); the old key can no longer add data"
    )
    if recovery:
        where = result.get("recovery_key") or result.get("shares_dir")
        console.print(
            f"recovery key rotated: new fingerprint {result['recovery_fingerprint']} ({where}); "
            "it opens every snapshot. Destroy the old key and shares once the new ones are stored."
        )


def rotate_recovery(
    policy: Any,
    reader: Any,
    key_out: Path | None,
    shares_out: Path | None,
    split: EscrowSplit,
    result: dict[str, Any],
) -> Any:
    """New recovery key written out first, then linked into the repository's chain."""
    from lifeboat.crypto.escrow import split_recovery_key
    from lifeboat.crypto.keys import RecoveryKey
    from lifeboat.errors import KeyError_
    from lifeboat.repo.recovery_chain import current_fingerprint, rotation_record

    current = reader.keyring.recovery
    if current.fingerprint() != current_fingerprint(reader):
        raise KeyError_(
            "only the newest recovery key can be rotated",
            hint="use the key or shares from the last 'keys rotate --recovery'",
        )
    new = RecoveryKey.generate(reader.id)
    if key_out is not None:
        new.save(key_out)
        result["recovery_key"] = str(key_out)
    if shares_out is not None:
        written = split_recovery_key(
            policy, reader, new, shares_out, split.threshold, split.custodians, split.passphrases
        )
        result["shares_dir"] = str(shares_out)
        result["shares"] = [str(p) for p in written]
    # Linked last: a failure above leaves the chain as it was (the old key stays the newest).
    name, record = rotation_record(reader, current, new)
    reader.put_record(name, record)
    result["recovery_fingerprint"] = new.fingerprint()
    result["previous_recovery_fingerprint"] = current.fingerprint()
    return new


def swap_backup_key(repo: Any, keyfile: Path, old: Any, recovery_public: bytes) -> Any:
    """The new key is recorded, then replaces the file; the old one is kept and retired."""
    from lifeboat.crypto.keys import new_backup_key

    new = new_backup_key(old.repo_id, recovery_public, old.id_key)
    repo.put_record(
        f"keys/{new.key_id}.json",
        {"key_id": new.key_id, "created": new.created, "status": "active", "replaces": old.key_id},
    )
    retired = keyfile.with_name(f"{keyfile.name}.retired-{time.strftime('%Y%m%dT%H%M%S')}")
    keyfile.rename(retired)
    new.save(keyfile)
    owner = retired.stat()
    if os.geteuid() == 0 and owner.st_uid != 0:  # the archiver's user reads it (init --owner)
        os.chown(keyfile, owner.st_uid, owner.st_gid)
    repo.put_record(
        f"keys/{old.key_id}.retired.json",
        {"key_id": old.key_id, "retired_by": new.key_id, "time": new.created},
    )
    return new
