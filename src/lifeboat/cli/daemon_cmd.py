"""`lifeboat daemon`, `lifeboat status`, `lifeboat schedule export`."""

from __future__ import annotations

from pathlib import Path

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import console, err_console, run_context


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
    from lifeboat.daemon.runner import Daemon

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
    from lifeboat.cli.status_run import status_of_policy

    code = status_of_policy(run_context(ctx).policy(), json_out)
    if code:
        raise typer.Exit(code)


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
