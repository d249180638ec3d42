"""`lifeboat unlock [--stale] [--all]`: remove repository locks left behind (audited)."""

from __future__ import annotations

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import console, print_json, run_context
from lifeboat.errors import ConfigError
from lifeboat.repo.locks import describe_age
from lifeboat.services.unlock import remove_locks


@app.command("unlock")
def unlock_cmd(
    ctx: typer.Context,
    stale: bool = typer.Option(
        False, "--stale", help="Remove stale locks only: dead process, or too old by storage time (default)."
    ),
    everything: bool = typer.Option(
        False, "--all", help="Remove every lock, live ones too (only when no lifeboat process runs)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Remove repository locks left by crashed or clock-skewed processes."""
    if stale and everything:
        raise ConfigError("--stale and --all exclude each other", hint="--all already removes stale locks")
    result = remove_locks(run_context(ctx).policy(), everything=everything)
    report = result.report
    if json_out:
        print_json(report)
    else:
        for lock in report.removed:
            kind = "exclusive" if lock.exclusive else "shared"
            console.print(f"removed {lock.name}: {lock.operation} (pid {lock.pid} on {lock.host}, {kind})")
        for lock in report.live:
            age = describe_age(result.ages[lock.name])
            who = f"pid {lock.pid} on {lock.host}"
            console.print(f"kept live {lock.name}: {lock.operation} ({who}, {age} old)")
        for name in report.failed:
            console.print(f"[red]could not remove[/red] {name}: the storage refused the deletion")
        console.print(
            f"{len(report.removed)} lock(s) removed, {len(report.live)} live lock(s) kept"
            + (f", {len(report.leftovers)} release marker(s) cleared" if report.leftovers else "")
        )
    if report.failed:
        raise typer.Exit(2)
