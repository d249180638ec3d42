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
    """Print (or apply) archive_mode, archive_command, archive_timeout and wal_level, then
    check, as PostgreSQL's OS user, that a WAL push can write (and that the server's
    archiver is not failing)."""
    from lifeboat.assets.postgres.configure import (
        apply_settings,
        archive_failure,
        probe_as_server_user,
        required_settings,
    )
    from lifeboat.assets.postgres.quoting import setting
    from lifeboat.cli.policy_slice import postgres_spec
    from lifeboat.errors import LifeboatError

    run = run_context(ctx)
    policy = run.policy()
    spec = postgres_spec(policy, asset)
    config = run.config_path.absolute()
    settings = required_settings(policy, spec, sys.executable, config)
    changed = apply_settings(spec.dsn, settings) if apply else []
    user, probe_error = probe_as_server_user(config, spec)
    failing = archive_failure(spec.dsn)
    if json_out:
        print_json(
            {
                "settings": settings,
                "applied": apply,
                "restart_needed": changed,
                "probe": {"user": user, "ok": probe_error is None, "error": probe_error},
                "archiver": {"ok": failing is None, "error": failing},
            }
        )
    else:
        for key, value in settings.items():
            console.print(setting(key, value), markup=False)
        if apply:
            console.print(
                "applied with ALTER SYSTEM and reloaded"
                + (f"; restart PostgreSQL for: {', '.join(changed)}" if changed else "")
            )
        if probe_error is None:
            console.print(f"write probe as {user}: ok (a WAL push can write the repository)")
    if probe_error is not None:
        raise LifeboatError(
            f"a WAL push as {user} would fail: {probe_error}",
            hint="archive_command runs as PostgreSQL's user; see the README's 'Who runs what'",
            exit_code=1,
        )
    if failing is not None:
        raise LifeboatError(failing, hint="the server log names the cause", exit_code=1)
