"""`lifeboat audit verify|show`: the hash-chained audit log and its signed copies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from lifeboat.audit import verify
from lifeboat.cli.app import app
from lifeboat.cli.common import console, print_json, run_context
from lifeboat.cli.credentials import (
    PassphraseOption,
    RecoveryKeyOption,
    ShareOption,
    credentials_options,
)

audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _log_path(ctx: typer.Context, file: Path | None) -> Path:
    return file or run_context(ctx).policy().state_dir / "audit.jsonl"


@audit_app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    file: Path = typer.Option(None, "--file", help="Audit log (default: <state dir>/audit.jsonl)."),
    local_only: bool = typer.Option(
        False, "--local-only", help="Only the local hash chain (misses a cut or rewritten log)."
    ),
    recovery_key: RecoveryKeyOption = None,
    share: ShareOption = None,
    passphrase_file: PassphraseOption = None,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Check every line's hash and its link to the previous one, and compare the log with
    its signed copies in the repository (writer key, or --recovery-key / --share); exit 1
    on any difference."""
    if local_only:
        report = verify(_log_path(ctx, file))
        if json_out:
            print_json(report)
        elif report.ok:
            console.print(f"audit log intact: {report.entries} entries, chain verified (local only)")
        else:
            console.print(f"[red]audit log broken[/red]: {report.problem}")
        if not report.ok:
            raise typer.Exit(1)
        return
    from lifeboat.services.audit import verify_audit

    result = verify_audit(
        run_context(ctx).policy(), credentials_options(recovery_key, share, passphrase_file), file
    )
    if json_out:
        print_json(result.to_json())
    else:
        _print_verification(result)
    if not result.ok:
        raise typer.Exit(1)


def _print_verification(result: Any) -> None:
    if result.ok:
        where = (
            f"matches its {result.anchored} signed copies in the repository"
            if result.compared
            else "(not compared with the repository)"
        )
        console.print(f"audit log intact: {result.entries} entries, chain verified, {where}")
    else:
        console.print(f"[red]audit log broken[/red]: {len(result.findings)} problem(s)")
        for finding in result.findings:
            console.print(f"  {finding.problem}: {finding.message}", markup=False)
    if result.note:
        console.print(f"note: {result.note}", markup=False)


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
