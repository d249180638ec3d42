"""`lifeboat daemon`, `lifeboat status`, `lifeboat schedule export`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from lifeboat.cli.app import app
from lifeboat.cli.common import console, err_console, print_json, run_context

if TYPE_CHECKING:
    from lifeboat.ops.status import AssetStatus


@app.command()
def daemon(
    ctx: typer.Context,
    once_due: bool = typer.Option(False, "--once-due", help="Run what is due now, then exit."),
    max_seconds: float = typer.Option(None, "--max-seconds", help="Stop after this long (tests, cron)."),
    listen: str = typer.Option(
        None, "--listen", help="Metrics/dashboard address (default: [daemon] listen)."
    ),
    no_http: bool = typer.Option(False, "--no-http", help="Do not serve /metrics and the dashboard."),
) -> None:
    """Scheduler: backups in their windows, checks, retention, drills, metrics, alerts."""
    from lifeboat.ops.daemon import Daemon

    policy = run_context(ctx).policy()
    address = None if no_http else (listen or policy.daemon.listen)
    d = Daemon(policy, log=lambda msg: err_console.print(f"lifeboat daemon: {msg}", markup=False))
    if address:
        err_console.print(f"lifeboat daemon: serving /metrics and the dashboard on http://{address}/")
    d.serve_forever(max_seconds=max_seconds, once_due=once_due, listen=address)


@app.command()
def status(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Per asset: last backup, exposure vs RPO, last drill vs RTO; exit 1 on any breach."""
    from lifeboat import runtime
    from lifeboat.ops.status import asset_status, key_warnings

    policy = run_context(ctx).policy()
    repo = runtime.open_for_write(policy)
    statuses = asset_status(policy, repo)
    warnings = key_warnings(policy, repo)
    breached = any(s.breaches for s in statuses)
    if json_out:
        print_json({"ok": not breached, "assets": [asdict(s) for s in statuses], "warnings": warnings})
    else:
        table = Table(
            "asset", "class", "last backup", "exposure / RPO", "last drill RTO / RTO", "30d success", "status"
        )
        for s in statuses:
            exposure = f"{s.exposure_s:.0f}s" if s.exposure_s is not None else "-"
            drill = f"{s.last_drill_rto_s:.1f}s" if s.last_drill_rto_s is not None else "-"
            rate = f"{s.success_rate_30d:.0%}" if s.success_rate_30d is not None else "-"
            state = "; ".join(s.breaches) if s.breaches else "ok"
            table.add_row(
                s.asset,
                s.data_class,
                s.last_backup or "never",
                f"{exposure} / {s.rpo_s:.0f}s",
                f"{drill} / {s.rto_s:.0f}s",
                rate,
                f"[{'red' if s.breaches else 'green'}]{state}[/]",
            )
        console.print(table)
        for s in statuses:
            console.print(
                f"{s.asset}: last drill {drill_cell(s)}; corrective actions {actions_cell(s)}",
                markup=False,
                soft_wrap=True,
            )
        for warning in warnings:
            console.print(f"[yellow]warning[/yellow]: {warning}")
    if breached:
        raise typer.Exit(1)


def drill_cell(s: AssetStatus) -> str:
    if s.last_drill is None:
        return "never"
    verdict = "passed" if s.last_drill_verdict == "pass" else "FAILED"
    return f"{s.last_drill_name} {verdict} {s.last_drill[:19]} ({s.last_drill_bundle})"


def actions_cell(s: AssetStatus) -> str:
    if not s.open_actions:
        return "none open"
    overdue = (
        f", {len(s.overdue_actions)} overdue ({'; '.join(s.overdue_actions)})" if s.overdue_actions else ""
    )
    return f"{len(s.open_actions)} open ({', '.join(s.open_actions)}){overdue}"


schedule_app = typer.Typer(help="Export schedules to other schedulers.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


@schedule_app.command("export")
def export(
    ctx: typer.Context,
    systemd: Path = typer.Option(None, "--systemd", help="Write service+timer units here."),
    kubernetes: Path = typer.Option(None, "--kubernetes", help="Write CronJob manifests here."),
) -> None:
    """systemd timers (windows as OnCalendar constraints) or Kubernetes CronJobs."""
    from lifeboat.errors import ConfigError
    from lifeboat.ops.export import kubernetes_cronjobs, kubernetes_shard_jobs, systemd_units

    run = run_context(ctx)
    policy = run.policy()
    if not systemd and not kubernetes:
        raise ConfigError("say where: --systemd DIR and/or --kubernetes DIR")
    if systemd:
        for path in systemd_units(policy, run.config_path.absolute(), systemd):
            console.print(f"wrote {path}")
    if kubernetes:
        console.print(f"wrote {kubernetes_cronjobs(policy, kubernetes)}")
        for path in kubernetes_shard_jobs(policy, kubernetes):
            console.print(f"wrote {path}")
