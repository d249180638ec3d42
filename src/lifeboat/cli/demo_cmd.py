"""`lifeboat demo`: the sandbox platform end to end (what `make demo` runs)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import console, human_bytes
from lifeboat.policy import load_policy


@app.command()
def demo(
    directory: Path = typer.Option(Path("demo-sandbox"), "--dir", help="Where to build the sandbox."),
) -> None:
    """Build a sandbox platform, back it up, change it, restore it and compare."""
    from lifeboat.sandbox.files_demo import run_files_demo
    from lifeboat.sandbox.platform import create_sandbox

    started = time.monotonic()
    console.print(f"[bold]lifeboat demo[/bold]: sandbox in {directory.resolve()}")
    sandbox = create_sandbox(directory)
    policy = load_policy(sandbox.policy_path)
    result = run_files_demo(
        policy, "config", sandbox.source, sandbox.restore_dir, lambda msg: console.print(f"  - {msg}")
    )
    console.print(
        f"first backup: {result.files} files, {human_bytes(result.first_bytes)} "
        f"in {result.first_seconds:.2f}s"
    )
    console.print(
        f"second backup: {result.reused_files} unchanged files skipped, "
        f"{human_bytes(result.second_new_bytes)} new, {human_bytes(result.second_stored_bytes)} stored, "
        f"in {result.second_seconds:.2f}s"
    )
    console.print(f"restore: {result.restore_seconds:.2f}s, identical to the source: {result.identical}")
    for problem in result.differences[:20]:
        console.print(f"  [red]{problem}[/red]")
    console.print(f"policy: {sandbox.policy_path}  (try: lifeboat -c {sandbox.policy_path} snapshots)")
    console.print(f"done in {time.monotonic() - started:.1f}s")
    if not result.identical:
        raise typer.Exit(1)
