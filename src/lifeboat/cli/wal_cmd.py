"""`lifeboat wal push|fetch|verify`: PostgreSQL's archive_command and restore_command.

`push` and `fetch` run once per WAL segment: `cli/entry.py` runs them without typer
(`cli/wal_run.py`), these commands are their `--help` and the slow path.
"""

from __future__ import annotations

from pathlib import Path

import typer

from lifeboat.cli import wal_run
from lifeboat.cli.app import app
from lifeboat.cli.common import run_context
from lifeboat.cli.policy_slice import postgres_asset, postgres_spec, wal_slice_of
from lifeboat.errors import LifeboatError, StorageError

wal_app = typer.Typer(help="WAL archiving for PostgreSQL assets.", no_args_is_help=True)
app.add_typer(wal_app, name="wal")


@wal_app.command("push")
def push(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="The WAL file (%p)."),
    asset: str = typer.Option(None, "--asset", help="The postgres asset (default: the only one)."),
    async_: bool = typer.Option(
        False, "--async", help="Spool locally and return; a background drainer uploads."
    ),
) -> None:
    """Archive one WAL file (archive_command). Durable before it exits 0; idempotent."""
    wal_run.push(*wal_slice_of(run_context(ctx).policy(), asset), path, async_)


@wal_app.command("probe", hidden=True)
def probe(
    ctx: typer.Context,
    asset: str = typer.Option(None, "--asset", help="The postgres asset (default: the only one)."),
) -> None:
    """Check, as the user running it, everything `wal push` needs: the backup key, the
    state directory, and a write through the push path (`pg configure` and `policy check`
    run it as PostgreSQL's user)."""
    from lifeboat import runtime
    from lifeboat.assets.postgres.configure import write_probe

    policy = run_context(ctx).policy()
    name = postgres_asset(policy, asset)
    repo = runtime.open_for_write(policy)
    runtime.require_writable_state(policy)
    write_probe(repo, name)


@wal_app.command("stream")
def stream(
    ctx: typer.Context,
    asset: str = typer.Option(None, "--asset", help="The postgres asset (default: the only one)."),
    flush_every: float = typer.Option(
        1.0, "--flush-every", help="Seconds between uploads of the open segment."
    ),
    max_seconds: float = typer.Option(
        None, "--max-seconds", help="Stop after this long (default: until SIGTERM)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable summary when it stops."),
) -> None:
    """Stream WAL continuously (pg_receivewal, supervised) for an RPO of seconds."""
    import signal
    import threading

    from lifeboat import runtime
    from lifeboat.assets.postgres.stream import WalStreamer
    from lifeboat.cli.common import console, err_console, print_json

    policy = run_context(ctx).policy()
    name = postgres_asset(policy, asset)
    spec = postgres_spec(policy, name)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if max_seconds is not None:
        timer = threading.Timer(max_seconds, stop.set)
        timer.daemon = True
        timer.start()
    streamer = WalStreamer(
        name,
        spec.dsn,
        policy.state_dir / "wal-stream" / name,
        lambda: runtime.open_for_write(policy),
        pg_bin=spec.pg_bin,
        flush_every=flush_every,
        log=lambda line: err_console.print(line, soft_wrap=True),
    )
    stats = streamer.run(stop)
    runtime.audit_log(policy).append(
        "wal-stream", asset=name, segments=stats.segments, partial_versions=stats.partial_versions
    )
    if json_out:
        print_json(stats.__dict__)
    else:
        console.print(
            f"{name}: streamed {stats.segments} segments, {stats.partial_versions} partial versions, "
            f"{stats.restarts} restarts"
        )


@wal_app.command("drain")
def drain(
    ctx: typer.Context,
    asset: str = typer.Option(None, "--asset", help="The postgres asset (default: the only one)."),
) -> None:
    """Upload what `wal push --async` spooled (the daemon runs this too)."""
    from lifeboat import runtime
    from lifeboat.assets.postgres.wal import drain_spool
    from lifeboat.cli.common import console

    policy = run_context(ctx).policy()
    name = postgres_asset(policy, asset)
    pushed = drain_spool(runtime.open_for_write(policy), name, policy.state_dir / "wal-spool" / name)
    console.print(f"{name}: {pushed} spooled WAL files archived")


@wal_app.command("fetch")
def fetch(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="WAL file name (%f)."),
    dest: Path = typer.Argument(..., help="Where PostgreSQL wants it (%p)."),
    asset: str = typer.Option(None, "--asset", help="The postgres asset (default: the only one)."),
    spool: Path = typer.Option(
        None, "--spool", help="A directory of pre-fetched WAL (no repository access)."
    ),
    recovery_key: Path = typer.Option(
        None,
        "--recovery-key",
        envvar="LIFEBOAT_RECOVERY_KEY",
        help="Recovery key file (or $LIFEBOAT_RECOVERY_KEY).",
    ),
) -> None:
    """Restore one WAL file (restore_command); exit 1 quietly when the archive lacks it, 200
    when it cannot be read (PostgreSQL then stops instead of ending recovery early)."""
    run = run_context(ctx)
    try:
        code = wal_run.fetch(lambda: wal_slice_of(run.policy(), asset), name, dest, spool, recovery_key)
    except LifeboatError as exc:
        exc.exit_code = wal_run.fetch_failure_code()
        raise
    except OSError as exc:  # writing %p (a full pg_wal): no internal error's 70, read as "not archived"
        raise StorageError(
            f"cannot write {dest}: {exc.strerror or exc}", exit_code=wal_run.fetch_failure_code()
        ) from None
    if code:
        raise typer.Exit(code)


@wal_app.command("verify")
def verify(
    ctx: typer.Context,
    asset: str = typer.Option(None, "--asset", help="The postgres asset (default: the only one)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Continuity from the oldest base backup to the newest segment, on every timeline."""
    from lifeboat import runtime
    from lifeboat.assets.postgres.wal import divergence_line, verify_archive
    from lifeboat.cli.common import console, print_json

    policy = run_context(ctx).policy()
    name = postgres_asset(policy, asset)
    repo = runtime.open_for_write(policy)
    report = verify_archive(repo, name)
    runtime.audit_log(policy, repo).append(
        "wal-verify",
        asset=name,
        outcome="ok" if report.ok and not report.divergent else "failed",
        gaps=[g.missing for g in report.gaps],
        divergent=[d["timeline"] for d in report.divergent],
    )
    if json_out:
        print_json({"ok": report.ok and not report.divergent, **report.__dict__})
    else:
        console.print(
            f"{name}: {report.segments} segments on timelines {report.timelines or '-'}, "
            f"{report.first or '-'} .. {report.last or '-'}"
        )
        if report.missing_start:
            console.print(
                f"[red]missing[/red] {report.missing_start}: the oldest base backup cannot be made consistent"
            )
        for gap in report.gaps:
            console.print(f"[red]missing[/red] {gap.missing} (timeline {gap.timeline}): {gap.breaks}")
        for d in report.divergent:
            console.print(f"[red]divergent[/red] {divergence_line(d)}", soft_wrap=True)
        if report.divergent:
            console.print(
                "hint: a restored copy or a second primary archived into this asset; "
                "'lifeboat restore --latest' follows the newest WAL, --timeline N overrides"
            )
        if report.ok:
            console.print("[green]WAL archive is continuous[/green]")
    if not report.ok or report.divergent:
        raise typer.Exit(1)
