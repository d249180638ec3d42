"""`lifeboat pg configure ASSET [--apply]`: the server settings archiving needs."""

from __future__ import annotations

import sys

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import console, print_json, run_context

pg_app = typer.Typer(help="PostgreSQL helpers.", no_args_is_help=True)
app.add_typer(pg_app, name="pg")


@pg_app.command("configure")
def configure(
    ctx: typer.Context,
    asset: str = typer.Argument(..., help="The postgres asset."),
    apply: bool = typer.Option(False, "--apply", help="Write them with ALTER SYSTEM and reload."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Print (or apply) archive_mode, archive_command, archive_timeout and wal_level."""
    from lifeboat.assets.postgres.configure import apply_settings, required_settings
    from lifeboat.assets.postgres.quoting import setting

    run = run_context(ctx)
    policy = run.policy()
    spec = policy.asset(asset)
    settings = required_settings(policy, spec, sys.executable, run.config_path.absolute())
    changed = apply_settings(spec.dsn, settings) if apply else []
    if json_out:
        print_json({"settings": settings, "applied": apply, "restart_needed": changed})
        return
    for key, value in settings.items():
        console.print(setting(key, value), markup=False)
    if apply:
        console.print(
            "applied with ALTER SYSTEM and reloaded"
            + (f"; restart PostgreSQL for: {', '.join(changed)}" if changed else "")
        )
