"""`lifeboat report --out DIR`: the static HTML dashboard."""

from __future__ import annotations

from pathlib import Path

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import console, run_context


@app.command()
def report(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="Directory for index.html."),
) -> None:
    """Write the dashboard: exposure vs RPO, drill RTO trends, success rate, growth, actions."""
    from lifeboat.ops.dashboard import build_dashboard

    path = build_dashboard(run_context(ctx).policy(), out)
    console.print(f"dashboard written to {path}")
