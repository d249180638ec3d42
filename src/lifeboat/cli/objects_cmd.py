"""`lifeboat objects inspect ASSET [--fix]`: is the source bucket protected as it should be?"""

from __future__ import annotations

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import console, human_bytes, print_json, run_context

objects_app = typer.Typer(help="Object-storage assets.", no_args_is_help=True)
app.add_typer(objects_app, name="objects")


@objects_app.command("inspect")
def inspect(
    ctx: typer.Context,
    asset: str = typer.Argument(..., help="An objects asset."),
    fix: bool = typer.Option(False, "--fix", help="Enable versioning when the credentials allow it."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Versioning, lifecycle rules that expire versions too early, object count and size."""
    from lifeboat.assets.objects.inspect import inspect_source

    policy = run_context(ctx).policy()
    report = inspect_source(policy, policy.asset(asset), fix=fix)
    if json_out:
        print_json(report)
    else:
        console.print(
            f"{asset}: {report.source}: versioning {report.versioning}, {report.objects} objects, "
            f"{human_bytes(report.bytes)}"
        )
        for warning in report.warnings:
            console.print(f"[yellow]warning[/yellow]: {warning}", markup=True)
        if report.fixed:
            console.print("versioning enabled")
