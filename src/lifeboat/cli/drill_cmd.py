"""`lifeboat drill run|list`: restore drills with measured RPO/RTO and signed evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from lifeboat.cli.app import app
from lifeboat.cli.common import console, err_console, print_json, run_context
from lifeboat.cli.credentials import (
    PassphraseOption,
    RecoveryKeyOption,
    ShareOption,
    credentials_options,
)

drill_app = typer.Typer(help="Restore drills.", no_args_is_help=True)
app.add_typer(drill_app, name="drill")


@drill_app.command("run")
def run_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A drill the policy names in a drills.NAME section."),
    keep: bool = typer.Option(
        False,
        "--keep",
        help="Keep the staging cluster and directories (removed otherwise, failed or not).",
    ),
    evidence_dir: Path = typer.Option(None, "--evidence-dir", help="Where the evidence bundle goes."),
    at: str = typer.Option(None, "--at", help="Recovery point to drill (default: the newest data)."),
    recovery_key: RecoveryKeyOption = None,
    share: ShareOption = None,
    passphrase_file: PassphraseOption = None,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Run a drill into isolated staging; exit 1 when it fails or misses a target."""
    from dataclasses import asdict

    from lifeboat.cli.restore_cmd import parse_time
    from lifeboat.services.drills import run_drill

    policy = run_context(ctx).policy()
    run, bundle = run_drill(
        policy,
        name,
        credentials_options(recovery_key, share, passphrase_file),
        keep=keep,
        evidence_dir=evidence_dir,
        at=parse_time(at),
        log=lambda msg: err_console.print(f"  - {msg}", markup=False),
    )
    if json_out:
        data = asdict(run)
        data.pop("logs")
        print_json({**data, "bundle": str(bundle)})
    else:
        colour = "green" if run.verdict == "pass" else "red"
        console.print(
            f"drill {name} ({run.scenario}): [{colour}]{run.verdict.upper()}[/{colour}] "
            f"in {run.total_rto_s:.1f}s"
        )
        table = Table("asset", "RPO achieved / target", "RTO achieved / target", "recovered to")
        for asset, target in run.targets.items():
            got = run.achieved[asset]
            rpo = "-" if got["rpo_s"] is None else f"{got['rpo_s']:.1f}s"
            table.add_row(
                asset,
                f"{rpo} / {target['rpo_s']:.0f}s",
                f"{got['rto_s']:.1f}s / {target['rto_s']:.0f}s",
                run.recovery_points.get(asset) or "-",
            )
        console.print(table)
        for check in run.checks:
            console.print(
                f"  {'PASS' if check.ok else 'FAIL'} {check.asset}: {check.name}: {check.detail}",
                markup=False,
            )
        for reason in run.reasons:
            console.print(f"  reason: {reason}", markup=False)
        for refusal in run.refused_drill_key_records:
            console.print(f"  refused drill-key record {refusal}", markup=False)
        console.print(f"signed by drill key {run.signing_key}", markup=False)
        console.print(
            f"evidence: {bundle}"
            + (f"; staging kept at {run.staging}" if run.kept else "")
            + (
                "; staging removed (run again with --keep to inspect it)"
                if run.verdict != "pass" and not run.kept
                else ""
            ),
            markup=False,
        )
    if run.verdict != "pass":
        raise typer.Exit(1)


@drill_app.command("list")
def list_cmd(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Drills in the policy, with their last result whose signed evidence holds."""
    from lifeboat.services.drills import drill_overview

    rows = drill_overview(run_context(ctx).policy())
    if json_out:
        print_json(rows)
    else:
        _print_drills(rows)
    if any(r["refused_bundles"] for r in rows):  # evidence that does not hold: somebody's doing
        raise typer.Exit(1)


def _print_drills(rows: list[dict[str, Any]]) -> None:
    table = Table("drill", "scenario", "assets", "last run", "verdict", "RTO")
    for r in rows:
        table.add_row(
            r["name"],
            r["scenario"],
            ", ".join(r["assets"]) or "all",
            r["last_run"] or "never",
            r["last_verdict"] or "-",
            f"{r['last_rto_s']:.1f}s" if r["last_rto_s"] else "-",
        )
    console.print(table)
    for r in rows:
        for refused in r["refused_bundles"]:
            err_console.print(
                f"warning: drill evidence {refused['bundle']} refused: {refused['problem']}", markup=False
            )
