"""`lifeboat demo`: the sandbox platform end to end (what `make demo` runs)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import console, human_bytes


@app.command()
def demo(
    directory: Path = typer.Option(Path("demo-sandbox"), "--dir", help="Where to build the sandbox."),
    traffic: float = typer.Option(8.0, "--traffic-seconds", help="How long to generate traffic."),
) -> None:
    """Build a sandbox platform, back it up, destroy it, and prove it comes back."""
    from lifeboat.sandbox.demo import run_demo

    started = time.monotonic()
    console.print(f"[bold]lifeboat demo[/bold]: sandbox platform in {directory.resolve()}")
    result = run_demo(
        directory,
        lambda msg: console.print(f"  [{time.monotonic() - started:5.1f}s] {msg}", markup=False),
        traffic,
    )
    console.print()
    for name, b in result.backups.items():
        console.print(
            f"first backup of {name}: snapshot {b['snapshot']}, {human_bytes(b['bytes'])} "
            f"({human_bytes(b['stored'])} stored) in {b['seconds']:.1f}s"
        )
    d = result.damage
    console.print(
        f"outage: database destroyed, {d.get('overwritten')} of {d.get('objects')} objects overwritten, "
        f"{d.get('deleted')} deleted, key files removed"
    )
    run = result.drill
    assert run is not None
    colour = "green" if run.verdict == "pass" else "red"
    console.print(
        f"full-outage drill: [{colour}]{run.verdict.upper()}[/{colour}], everything back in "
        f"{run.total_rto_s:.1f}s"
    )
    for asset, target in run.targets.items():
        got = run.achieved[asset]
        rpo = "-" if got["rpo_s"] is None else f"{got['rpo_s']:.1f}s"
        console.print(
            f"  {asset:14} RPO {rpo:>8} (target {target['rpo_s']:.0f}s)   "
            f"RTO {got['rto_s']:6.1f}s (target {target['rto_s']:.0f}s)"
        )
    for check in run.checks:
        console.print(
            f"  {'PASS' if check.ok else 'FAIL'} {check.asset}: {check.name}: {check.detail}", markup=False
        )
    console.print(
        f"evidence bundle: {result.bundle} (signature {'valid' if result.bundle_ok else 'INVALID'}; "
        f"check it with: lifeboat evidence verify {result.bundle} --key {run.signing_key})"
    )
    console.print(f"dashboard: {result.dashboard}")
    console.print(f"policy: {result.policy}   demo finished in {result.seconds:.0f}s")
    if run.verdict != "pass" or not result.bundle_ok:
        raise typer.Exit(1)
