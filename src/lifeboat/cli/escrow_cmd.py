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
    from lifeboat import runtime
    from lifeboat.crypto.escrow import split_recovery_key
    from lifeboat.crypto.keys import load_recovery_key

    policy = run_context(ctx).policy()
    recovery = load_recovery_key(recovery_key)
    repo = runtime.open_for_read(
        policy, runtime.Credentials(recovery_key=recovery_key), purpose="escrow split"
    )
    names = [c.strip() for c in custodians.split(",")] if custodians else None
    written = split_recovery_key(
        policy, repo, recovery, out, threshold, names, custodian_passphrases(custodian_passphrase)
    )
    m = threshold or policy.escrow_threshold()
    runtime.audit_log(policy, repo).append(
        "escrow-split", threshold=m, custodian_names=[p.stem for p in written]
    )
    if json_out:
        print_json({"threshold": m, "shares": [str(p) for p in written]})
        return
    console.print(f"split the recovery key into {len(written)} shares, {m} needed to recover:")
    for path in written:
        console.print(f"  {path}  (give to {path.stem}; keep offline)")


@escrow_app.command("verify-share")
def verify_share(
    ctx: typer.Context,
    share: Path = typer.Argument(..., help="The custodian's share file."),
    passphrase_file: PassphraseOption = None,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Check that a share is valid and belongs to this repository (reveals nothing)."""
    from lifeboat import runtime
    from lifeboat.crypto.escrow import escrow_records
    from lifeboat.crypto.unlock import shares_from_files
    from lifeboat.errors import KeyError_
    from lifeboat.repo import RecordsView

    policy = run_context(ctx).policy()
    creds = credentials_options(None, [share], passphrase_file)
    (parsed,) = shares_from_files(creds)
    records = escrow_records(RecordsView(runtime.storage_for(policy)))
    match = [r for r in records if r.identifier == parsed.identifier]
    audit = runtime.audit_log(policy)
    if not match:
        audit.append("escrow-verify-share", outcome="refused", custodian=parsed.custodian)
        raise KeyError_(f"share of {parsed.custodian} does not belong to this repository's escrow")
    record = match[-1]
    audit.append("escrow-verify-share", custodian=parsed.custodian)
    result = {
        "valid": True,
        "custodian": parsed.custodian,
        "member": parsed.index + 1,
        "threshold": record.threshold,
        "of": len(record.custodians),
        "escrow_created": record.created,
    }
    if json_out:
        print_json(result)
    else:
        console.print(
            f"valid share of {parsed.custodian} for this repository "
            f"({record.threshold}-of-{len(record.custodians)} escrow created {record.created})"
        )
