"""`lifeboat evidence verify DIR`: check a drill bundle's sums and its signature against a
pinned drill-key fingerprint (offline), or the repository's root-signed drill-key record."""

from __future__ import annotations

from pathlib import Path

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import console, print_json, run_context
from lifeboat.cli.credentials import (
    PassphraseOption,
    RecoveryKeyOption,
    ShareOption,
    credentials_options,
)

evidence_app = typer.Typer(help="Drill evidence bundles.", no_args_is_help=True)
app.add_typer(evidence_app, name="evidence")


@evidence_app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    bundle: Path = typer.Argument(..., help="The bundle directory."),
    key: str = typer.Option(
        None,
        "--key",
        help="Fingerprint of the drill signing key (sha256:..., as 'init' and 'drill run' print it); "
        "verifies offline. Default: the repository's root-signed drill-key record (needs the policy).",
    ),
    recovery_key: RecoveryKeyOption = None,
    share: ShareOption = None,
    passphrase_file: PassphraseOption = None,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Every file's SHA-256 and the Ed25519 signature by the pinned key; exit 1 on any mismatch."""
    from dataclasses import asdict

    from lifeboat.crypto.pinning import normalise_fingerprint
    from lifeboat.drills.evidence import verify_bundle

    refused: list[str] = []
    if key is not None:
        pinned, source = normalise_fingerprint(key), "the pinned key (--key)"
    else:
        from lifeboat.services.drills import published_drill_key

        policy = run_context(ctx).policy()
        creds = credentials_options(recovery_key, share, passphrase_file)
        pinned, source, refused = published_drill_key(policy, creds)
    result = verify_bundle(bundle, pinned, source)
    if json_out:
        print_json({**asdict(result), "refused_records": refused})
    else:
        for refusal in refused:
            console.print(f"refused drill-key record {refusal}", markup=False)
        if result.ok:
            console.print(
                f"{bundle}: {result.files} files intact, signed by {pinned} ({source})", markup=False
            )
        else:
            for problem in result.problems:
                console.print(f"[red]{bundle}[/red]: {problem}")
            console.print(f"checked against {pinned} ({source})", markup=False)
    if not result.ok:
        raise typer.Exit(1)
