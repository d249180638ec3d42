"""`lifeboat evidence verify DIR`: check a drill bundle's sums and signature offline."""

from __future__ import annotations

from pathlib import Path

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import console, print_json

evidence_app = typer.Typer(help="Drill evidence bundles.", no_args_is_help=True)
app.add_typer(evidence_app, name="evidence")


@evidence_app.command("verify")
def verify_cmd(
    bundle: Path = typer.Argument(..., help="The bundle directory."),
    key: str = typer.Option(None, "--key", help="Trusted drill public key (hex); default: the bundle's own."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Every file's SHA-256 and the Ed25519 signature; exit 1 on any mismatch."""
    from lifeboat.drills.evidence import verify_bundle

    result = verify_bundle(bundle, key)
    if json_out:
        print_json(result)
    elif result.ok:
        console.print(
            f"{bundle}: {result.files} files intact, signature valid (key {result.public_key[:16]}...)"
        )
    else:
        for problem in result.problems:
            console.print(f"[red]{bundle}[/red]: {problem}")
    if not result.ok:
        raise typer.Exit(1)
