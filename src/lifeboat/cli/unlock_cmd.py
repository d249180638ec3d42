"""`lifeboat unlock [--stale] [--all]`: remove repository locks left behind (audited)."""

from __future__ import annotations

import typer

from lifeboat import runtime
from lifeboat.cli.app import app
from lifeboat.cli.common import console, print_json, run_context
from lifeboat.errors import ConfigError
from lifeboat.repo.locks import describe_age, storage_age, storage_now, unlock


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
    policy = run_context(ctx).policy()
    repo = runtime.open_for_write(policy)
    report = unlock(repo.storage, everything=everything)
    runtime.audit_log(policy, repo).append(
        "unlock",
        outcome="ok" if not report.failed else "failed",
        mode="all" if everything else "stale",
        removed=[lock.name for lock in report.removed] + report.leftovers,
        kept=[lock.name for lock in report.live],
        failed=report.failed,
    )
    if json_out:
        print_json(report)
    else:
        now = storage_now(repo.storage) if report.live else 0.0
        for lock in report.removed:
            kind = "exclusive" if lock.exclusive else "shared"
            console.print(f"removed {lock.name}: {lock.operation} (pid {lock.pid} on {lock.host}, {kind})")
        for lock in report.live:
            age = describe_age(storage_age(lock, now))
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
