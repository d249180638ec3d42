"""`lifeboat actions list|close`: the corrective-actions ledger."""

from __future__ import annotations

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import console, print_json, run_context

actions_app = typer.Typer(help="Corrective actions opened by drills.", no_args_is_help=True)
app.add_typer(actions_app, name="actions")


@actions_app.command("list")
def list_cmd(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", help="Include closed actions."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Open corrective actions (all with --all)."""
    from lifeboat.drills.service import ledger_for

    actions = [a for a in ledger_for(run_context(ctx).policy()).load() if all_ or a.status == "open"]
    if json_out:
        print_json(actions)
        return
    for a in actions:
        console.print(f"{a.id} [{a.status}] {a.title} (owner {a.owner}; evidence {a.evidence})", markup=False)
    if not actions:
        console.print("no open corrective actions")


@actions_app.command("close")
def close_cmd(
    ctx: typer.Context,
    action_id: str = typer.Argument(..., help="e.g. CA-0001"),
    note: str = typer.Option(..., "--note", help="What was done."),
) -> None:
    """Close a corrective action with a note."""
    from lifeboat import runtime
    from lifeboat.drills.service import ledger_for

    policy = run_context(ctx).policy()
    action = ledger_for(policy).close(action_id, note)
    runtime.audit_log(policy).append("action-close", action=action.id)
    console.print(f"closed {action.id}: {action.title}", markup=False)
