"""`lifeboat copy NAME`: bring a further repository ([copies.NAME]) up to date."""

from __future__ import annotations

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import console, human_bytes, print_json, progress_bar, run_context


@app.command("copy")
def copy_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A copy named in the policy's [copies.NAME]."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Copy every object the copy lacks, verbatim (nothing is decrypted); resumable."""
    from lifeboat.ops.replication import run_copy

    policy = run_context(ctx).policy()
    policy.copy_config(name)  # an unknown name fails before anything is opened
    with progress_bar(f"copying to {name}") as bar:
        report = run_copy(policy, name, on_object=lambda _n, size: bar.advance(size))
    if json_out:
        print_json(
            {
                "copy": name,
                "source": report.source,
                "target": report.target,
                "objects": report.objects,
                "bytes": report.bytes,
                "copied": report.copied,
                "already_there": report.already_there,
                "config_copied": report.config_copied,
                "retention_extended": report.retention_extended,
            }
        )
        return
    parts = ", ".join(f"{n} {what}" for what, n in report.copied.items())
    console.print(
        f"copied {report.objects} objects ({human_bytes(report.bytes)}) to {name} ({report.target}): "
        f"{parts}; {report.already_there} already there"
    )
