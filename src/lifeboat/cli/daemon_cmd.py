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
        None, "--listen", help="Metrics/dashboard address (default: the policy's daemon.listen)."
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
    from lifeboat.ops.replication import copy_states
    from lifeboat.ops.status import asset_status, fleet_groups, key_warnings
    from lifeboat.repo.immutability import tampering_problems

    policy = run_context(ctx).policy()
    repo = runtime.open_for_write(policy)
    groups = fleet_groups(asset_status(policy, repo))
    statuses = [s for _, group in groups for s in group]
    warnings = key_warnings(policy, repo)
    tampered = [p.message for p in tampering_problems(repo)]
    copies = copy_states(policy, repo.snapshots()) if policy.copies else []
    breached = any(s.breaches for s in statuses) or bool(tampered) or any(c.breach for c in copies)
    if json_out:
        hosts = [{"host": host, "assets": [s.asset for s in group]} for host, group in groups]
        assets = [asdict(s) for s in statuses]
        print_json(
            {
                "ok": not breached,
                "assets": assets,
                "hosts": hosts,
                "warnings": warnings,
                "tampered": tampered,
                "copies": [asdict(c) | {"breach": c.breach} for c in copies],
            }
        )
    else:
        for host, group in groups:
            breaching = sum(1 for s in group if s.breaches)
            console.print(
                f"host {host}: {len(group)} asset(s), {breaching} breaching", markup=False, soft_wrap=True
            )
            console.print(status_table(group))
        for s in statuses:
            console.print(
                f"{s.asset}: last drill {drill_cell(s)}; corrective actions {actions_cell(s)}",
                markup=False,
                soft_wrap=True,
            )
        for c in copies:
            console.print(c.describe(), markup=False, soft_wrap=True)
        for warning in warnings:
            console.print(f"[yellow]warning[/yellow]: {warning}")
        for message in tampered:
            console.print(f"tampered: {message}", soft_wrap=True, markup=False)
    if breached:
        raise typer.Exit(1)


def status_table(statuses: list[AssetStatus]) -> Table:
    """One host's assets, riskiest first (exposure / RPO)."""
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
    return table


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


def _owner(path: Path) -> str:
    import pwd

    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (OSError, KeyError):
        return "root"


@schedule_app.command("export")
def export(
    ctx: typer.Context,
    systemd: Path = typer.Option(None, "--systemd", help="Write service+timer units here."),
    kubernetes: Path = typer.Option(None, "--kubernetes", help="Write CronJob manifests here."),
    user: str = typer.Option(None, "--user", help="systemd User= (default: the policy file's owner)."),
    grafana: Path = typer.Option(None, "--grafana", help="Write a Grafana dashboard (JSON) here."),
    prometheus_rules: Path = typer.Option(
        None, "--prometheus-rules", help="Write Prometheus alert rules (plain and PrometheusRule) here."
    ),
) -> None:
    """systemd timers (windows as OnCalendar constraints) or Kubernetes CronJobs; a Grafana
    dashboard and Prometheus alert rules over the daemon's /metrics."""
    from lifeboat.errors import ConfigError
    from lifeboat.ops.export import kubernetes_cronjobs, kubernetes_shard_jobs, systemd_units

    run = run_context(ctx)
    policy = run.policy()
    if not (systemd or kubernetes or grafana or prometheus_rules):
        raise ConfigError("say where: --systemd DIR, --kubernetes DIR, --grafana DIR, --prometheus-rules DIR")
    if grafana or prometheus_rules:
        from lifeboat.ops import monitoring

        for path in [monitoring.grafana_dashboard(grafana)] if grafana else []:
            console.print(f"wrote {path}", markup=False)
        for path in monitoring.prometheus_rules(prometheus_rules) if prometheus_rules else []:
            console.print(f"wrote {path}", markup=False)
    if systemd:
        from lifeboat.ops.export import systemd_install_steps

        owner = user or _owner(run.config_path)
        written = systemd_units(policy, run.config_path.absolute(), systemd, user=owner)
        for path in written:
            console.print(f"wrote {path}", markup=False)
        console.print(f"install (as root; units run as {owner}):", markup=False)
        for step in systemd_install_steps(written):
            console.print(f"  {step}", markup=False)
    if kubernetes:
        console.print(f"wrote {kubernetes_cronjobs(policy, kubernetes)}", markup=False)
        from lifeboat.ops.export import kubernetes_maintenance

        console.print(f"wrote {kubernetes_maintenance(policy, kubernetes)}", markup=False)
        for path in kubernetes_shard_jobs(policy, kubernetes):
            console.print(f"wrote {path}", markup=False)
