"""`lifeboat audit verify|show`: the hash-chained audit log."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lifeboat.audit import verify
from lifeboat.cli.app import app
from lifeboat.cli.common import console, print_json, run_context

audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _log_path(ctx: typer.Context, file: Path | None) -> Path:
    return file or run_context(ctx).policy().state_dir / "audit.jsonl"


@audit_app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    file: Path = typer.Option(None, "--file", help="Audit log (default: <state dir>/audit.jsonl)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Check every line's hash and its link to the previous one; exit 1 on any break."""
    report = verify(_log_path(ctx, file))
    if json_out:
        print_json(report)
    elif report.ok:
        console.print(f"audit log intact: {report.entries} entries, chain verified")
    else:
        console.print(f"[red]audit log broken[/red]: {report.problem}")
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("show")
def show_cmd(
    ctx: typer.Context,
    last: int = typer.Option(20, "--last", help="How many entries."),
    file: Path = typer.Option(None, "--file", help="Audit log (default: <state dir>/audit.jsonl)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The most recent audit entries."""
    path = _log_path(ctx, file)
    lines = path.read_text().splitlines()[-last:] if path.exists() else []
    entries = [json.loads(line) for line in lines]
    if json_out:
        print_json(entries)
        return
    for e in entries:
        console.print(
            f"{e['seq']:>5} {e['time']} {e['actor']} {e['operation']} {e.get('asset') or '-'} {e['outcome']}",
            markup=False,
        )
