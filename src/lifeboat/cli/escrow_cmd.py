"""`lifeboat escrow split|verify-share`: the recovery key as M-of-N custodian shares."""

from __future__ import annotations

from pathlib import Path

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import console, print_json, run_context
from lifeboat.cli.credentials import (
    CustodianPassphraseOption,
    PassphraseOption,
    credentials_options,
    custodian_passphrases,
)

escrow_app = typer.Typer(help="Escrow of the recovery key (SLIP-39 shares).", no_args_is_help=True)
app.add_typer(escrow_app, name="escrow")


@escrow_app.command("split")
def split_cmd(
    ctx: typer.Context,
    recovery_key: Path = typer.Option(..., "--recovery-key", help="The recovery key file to split."),
    out: Path = typer.Option(..., "--out", help="Directory for one share file per custodian (0600)."),
    threshold: int = typer.Option(None, "--threshold", help="M (default: the deployment mode's)."),
    custodians: str = typer.Option(None, "--custodians", help="Comma-separated names (default: policy)."),
    custodian_passphrase: CustodianPassphraseOption = None,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Split the recovery key into SLIP-39 shares and record the escrow in the repository."""
    from lifeboat.services import escrow

    names = [c.strip() for c in custodians.split(",")] if custodians else None
    result = escrow.split(
        run_context(ctx).policy(),
        recovery_key,
        out,
        threshold=threshold,
        custodians=names,
        passphrases=custodian_passphrases(custodian_passphrase),
    )
    m, written = result.threshold, result.shares
    if json_out:
        data = {"threshold": m, "shares": [str(p) for p in written]}
        print_json(data | ({"without_key_material": True} if result.without_key_material else {}))
        return
    console.print(f"split the recovery key into {len(written)} shares, {m} needed to recover:")
    for path in written:
        console.print(f"  {path}  (give to {path.stem}; keep offline)")
    if result.without_key_material:
        console.print(
            "note: these files hold no share of the key-material escrow key (a recovery-key file "
            "cannot split it): custodians keep their earlier share files for key material, or "
            "use 'lifeboat keys rotate --recovery --share ... --shares-out DIR', which re-splits both",
            markup=False,
        )


@escrow_app.command("verify-share")
def verify_share(
    ctx: typer.Context,
    share: Path = typer.Argument(..., help="The custodian's share file."),
    passphrase_file: PassphraseOption = None,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Check that a share is valid and belongs to this repository (reveals nothing)."""
    from lifeboat.services import escrow

    creds = credentials_options(None, [share], passphrase_file)
    check = escrow.verify_share(run_context(ctx).policy(), creds)
    result = {
        "valid": True,
        "custodian": check.custodian,
        "member": check.member,
        "threshold": check.threshold,
        "of": check.of,
        "escrow_created": check.escrow_created,
        "key_material": check.key_material,
    }
    if json_out:
        print_json(result)
    else:
        console.print(
            f"valid share of {check.custodian} for this repository "
            f"({check.threshold}-of-{check.of} escrow created {check.escrow_created})"
            + ("; it also holds a valid share of the key-material escrow key" if check.key_material else "")
        )
