"""`lifeboat keys rotate [--recovery]`: new keys; the old backup key stops adding data."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from lifeboat.crypto.credentials import Credentials
    from lifeboat.policy import Policy
    from lifeboat.services.keys import KeyRotation


keys_app = typer.Typer(help="Repository keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def rotate(
    ctx: typer.Context,
    recovery: bool = typer.Option(
        False, "--recovery", help="Also replace the recovery key (needs the current one or its shares)."
    ),
    escrow: bool = typer.Option(
        False,
        "--escrow",
        help="Replace the key-material escrow key instead (e.g. to cut off a departed custodian): "
        "new shares for --custodians into --shares-out; needs the recovery key or shares.",
    ),
    drill: bool = typer.Option(
        False,
        "--drill",
        help="Replace the drill signing key instead (needs the recovery key or shares); "
        "prints the old and new fingerprints.",
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
    since: str = typer.Option(
        None,
        "--since",
        help="Revoke the old writer key from this ISO time on (the suspected compromise; default now).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Write a new backup key and revoke the old one; snapshots written before stay restorable.

    A writer key's next generation gets all-new secrets and the old one is revoked in the
    writer registry, which the root key signs: pass --recovery-key or --share. Every reader
    then refuses what the old key signs from the revocation on (--since: from the suspected
    compromise), whatever its key file is edited to say.

    With --recovery, a new recovery key too: the new key (or its shares) opens every
    snapshot, old and new; the old recovery key cannot read anything written afterwards.
    """
    from lifeboat.services import keys

    policy = run_context(ctx).policy()
    if escrow:
        if recovery or drill or since or recovery_key_out:
            raise ConfigError("--escrow rotates the escrow key alone: run the other rotations apart")
        if shares_out is None:
            raise ConfigError("keys rotate --escrow needs --shares-out DIR for the custodians' new shares")
        names = [c.strip() for c in custodians.split(",")] if custodians else None
        creds = credentials_options(recovery_key, share, passphrase_file)
        passphrases = custodian_passphrases(custodian_passphrase)
        _rotate_escrow(policy, creds, shares_out, threshold, names, passphrases, json_out)
        return
    if drill:
        if recovery or since or recovery_key_out or shares_out:
            raise ConfigError("--drill rotates the drill signing key alone: run the other rotations apart")
        _rotate_drill(policy, credentials_options(recovery_key, share, passphrase_file), json_out)
        return
    if not recovery and (recovery_key_out or shares_out):
        raise ConfigError("--recovery-key-out and --shares-out only make sense with --recovery or --escrow")
    # a writer key's rotation is signed by the root key: it needs the credentials too
    creds, how = credentials_options(recovery_key, share, passphrase_file), None
    if recovery:
        names = [c.strip() for c in custodians.split(",")] if custodians else None
        split = keys.EscrowSplit(threshold, names, custodian_passphrases(custodian_passphrase))
        how = keys.RecoveryRotation(recovery_key_out, shares_out, split)
    result = keys.rotate(policy, creds, how, parse_since(since))
    if json_out:
        print_json(rotation_json(result))
        return
    if result.writer is not None:
        console.print(
            f"writer {result.writer} rotated: generation {result.old_generation} -> "
            f"{result.new_generation} ({result.keyfile}, key {result.new_key_id}); generation "
            f"{result.old_generation} is revoked from {result.revoked_at}: what it signs is refused",
            markup=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"backup key rotated: {result.old_key_id} -> {result.new_key_id} ({result.keyfile}); "
            "the old key can no longer add data",
            markup=False,
            soft_wrap=True,
        )
    if recovery:
        where = result.recovery_key or result.shares_dir
        console.print(
            f"recovery key rotated: new fingerprint {result.recovery_fingerprint} ({where}); "
            "it opens every snapshot. Destroy the old key and shares once the new ones are stored."
        )


def _rotate_drill(policy: Policy, creds: Credentials, json_out: bool) -> None:
    from lifeboat.services.key_rotation import rotate_drill_key

    rotation = rotate_drill_key(policy, creds)
    if json_out:
        print_json(
            {
                "drill_key": {
                    "old_fingerprint": rotation.old_fingerprint,
                    "new_fingerprint": rotation.new_fingerprint,
                },
                "refused_drill_key_records": list(rotation.refused),
            }
        )
        return
    for refusal in rotation.refused:
        console.print(f"refused drill-key record {refusal}", markup=False, soft_wrap=True)
    old = rotation.old_fingerprint or "none"
    console.print(
        f"drill signing key rotated: {old} -> {rotation.new_fingerprint}; new drills sign with "
        f"the new key, evidence signed before still verifies with --key {old}",
        markup=False,
        soft_wrap=True,
    )


def _rotate_escrow(
    policy: Policy,
    creds: Credentials,
    shares_out: Path,
    threshold: int | None,
    names: list[str] | None,
    passphrases: dict[str, bytes],
    json_out: bool,
) -> None:
    from lifeboat.services.key_rotation import rotate_escrow_key

    rotation = rotate_escrow_key(policy, creds, shares_out, threshold, names, passphrases)
    if json_out:
        print_json(
            {
                "escrow_key": {
                    "old_fingerprint": rotation.old_fingerprint,
                    "new_fingerprint": rotation.new_fingerprint,
                    "threshold": rotation.threshold,
                    "custodians": rotation.custodians,
                },
                "shares_dir": str(rotation.shares_dir),
                "shares": [str(p) for p in rotation.shares],
            }
        )
        return
    console.print(
        f"escrow key rotated: {rotation.old_fingerprint} -> {rotation.new_fingerprint} "
        f"({rotation.threshold} of {', '.join(rotation.custodians)}; shares in {rotation.shares_dir}). "
        "Key material backed up from now on opens only with the new shares; what was backed up "
        "before stays sealed to the old key: back up the keys assets now.",
        markup=False,
        soft_wrap=True,
    )


def rotation_json(result: KeyRotation) -> dict[str, Any]:
    """The --json shape: what was rotated, and where the new recovery key went."""
    data: dict[str, Any] = {"old_key_id": result.old_key_id, "keyfile": str(result.keyfile)}
    if result.recovery_key is not None:
        data["recovery_key"] = str(result.recovery_key)
    if result.shares_dir is not None:
        data["shares_dir"] = str(result.shares_dir)
        data["shares"] = [str(p) for p in result.shares]
    if result.recovery_fingerprint is not None:
        data["recovery_fingerprint"] = result.recovery_fingerprint
        data["previous_recovery_fingerprint"] = result.previous_recovery_fingerprint
    data["new_key_id"] = result.new_key_id
    if result.writer is not None:
        data.update(
            writer=result.writer,
            old_generation=result.old_generation,
            new_generation=result.new_generation,
            revoked_at=result.revoked_at,
            registry_version=result.registry_version,
        )
    return data


def parse_since(since: str | None) -> datetime | None:
    """--since as a zoned time (a one-line error otherwise)."""
    if since is None:
        return None
    try:
        at = datetime.fromisoformat(since)
    except ValueError:
        raise ConfigError(f"--since {since!r} is not an ISO time (e.g. 2026-11-30T08:00:00+00:00)") from None
    if at.tzinfo is None:
        raise ConfigError("--since needs a time with a zone, e.g. 2026-11-30T08:00:00+00:00")
    return at


@keys_app.command("add-writer")
def add_writer(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The writer's name (a backup host, e.g. db-1)."),
    assets: str = typer.Option(..., "--assets", help="Comma-separated assets it may write ('*': all)."),
    out: Path = typer.Option(..., "--out", help="Where to write the writer's key file (0600)."),
    recovery_key: RecoveryKeyOption = None,
    share: ShareOption = None,
    passphrase_file: PassphraseOption = None,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Issue a writer key: a backup host's own signing identity, allowed only --assets.

    The root key (from the recovery key or M custodians' shares) signs the new registry
    version. Issuing an existing name rotates it: the old key is revoked from now on.
    """
    from lifeboat.services import keys

    policy = run_context(ctx).policy()
    creds = credentials_options(recovery_key, share, passphrase_file)
    issued = keys.add_writer(policy, creds, name, assets.split(","), out)
    data = {
        "writer": issued.name,
        "generation": issued.generation,
        "assets": issued.assets,
        "keyfile": str(issued.keyfile),
        "key_id": issued.key_id,
        "registry_version": issued.registry_version,
        "revoked_generation": issued.revoked_generation,
    }
    if json_out:
        print_json(data)
        return
    rotated = (
        f"; generation {issued.revoked_generation} is revoked"
        if issued.revoked_generation is not None
        else ""
    )
    console.print(
        f"writer {issued.name} (generation {issued.generation}) may write {', '.join(issued.assets)}: "
        f"key written to {issued.keyfile}{rotated}",
        markup=False,
        soft_wrap=True,
    )


@keys_app.command("revoke-writer")
def revoke_writer(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The writer to revoke."),
    since: str = typer.Option(
        None, "--since", help="Revoke from this ISO time on (the suspected compromise; default now)."
    ),
    recovery_key: RecoveryKeyOption = None,
    share: ShareOption = None,
    passphrase_file: PassphraseOption = None,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Revoke a writer: every reader refuses what its key signed from --since on."""
    from lifeboat.services import keys

    policy = run_context(ctx).policy()
    creds = credentials_options(recovery_key, share, passphrase_file)
    revoked = keys.revoke_writer_key(policy, creds, name, parse_since(since))
    if json_out:
        print_json(
            {
                "writer": revoked.name,
                "generation": revoked.generation,
                "revoked_at": revoked.revoked_at,
                "registry_version": revoked.registry_version,
            }
        )
        return
    console.print(
        f"writer {revoked.name} (generation {revoked.generation}) revoked from {revoked.revoked_at}: "
        "what it signs from then on is refused",
        markup=False,
        soft_wrap=True,
    )


@keys_app.command("writers")
def writers(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List the writer registry (verified against the repository's root key)."""
    from lifeboat.services import keys

    rows = keys.list_writers(run_context(ctx).policy())
    if json_out:
        print_json(rows)
        return
    for row in rows:
        state = f"revoked {row['revoked']}" if row["revoked"] else "active"
        console.print(
            f"{row['name']} gen {row['generation']}: {', '.join(row['assets'])} "
            f"(issued {row['issued']}, {state})",
            markup=False,
            soft_wrap=True,
        )
    if not rows:
        console.print("no writer registry: an unsigned legacy repository", markup=False)
