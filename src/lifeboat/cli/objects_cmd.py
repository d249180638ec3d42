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
    from lifeboat.assets.objects.model import ObjectsAsset
    from lifeboat.errors import ConfigError

    policy = run_context(ctx).policy()
    spec = policy.asset(asset)
    if not isinstance(spec, ObjectsAsset):
        raise ConfigError(f"{asset!r} is not an objects asset")
    report = inspect_source(policy, spec, fix=fix)
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
