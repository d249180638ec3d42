"""`lifeboat wal push|fetch|verify`: PostgreSQL's archive_command and restore_command.

These run once per WAL segment, so they import only what they need.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import run_context

wal_app = typer.Typer(help="WAL archiving for PostgreSQL assets.", no_args_is_help=True)
app.add_typer(wal_app, name="wal")


def _postgres_asset(policy: object, asset: str | None) -> str:
    from lifeboat.errors import ConfigError

    names = [n for n, a in policy.assets.items() if a.kind == "postgres"]  # type: ignore[attr-defined]
    if asset:
        if asset not in names:
            raise ConfigError(
                f"{asset!r} is not a postgres asset (postgres assets: {', '.join(names) or 'none'})"
            )
        return asset
    if len(names) != 1:
        raise ConfigError("several postgres assets: name one with --asset", hint=f"known: {', '.join(names)}")
    return str(names[0])


def _system_identifier(policy: object, repo: object, asset: str) -> int | None:
    """The asset's system identifier, cached in the state dir once a base backup recorded
    it (push runs once per segment: no listing of snapshots each time)."""
    from lifeboat.assets.postgres.wal import asset_system_identifier

    cache = policy.state_dir / "wal-sysid" / asset  # type: ignore[attr-defined]
    try:
        return int(cache.read_text().strip())
    except (OSError, ValueError):
        pass
    found = asset_system_identifier(repo, asset)  # type: ignore[arg-type]
    if found is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(f"{found}\n")
    return found


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
    from lifeboat import runtime
    from lifeboat.assets.postgres.wal import drain_spool, push_segment, spool_segment

    policy = run_context(ctx).policy()
    name = _postgres_asset(policy, asset)
    if async_ or policy.asset(name).wal_async:
        spool = policy.state_dir / "wal-spool" / name
        spool_segment(spool, path)
        if os.fork() == 0:  # the drainer outlives archive_command; one at a time (flock)
            try:
                os.setsid()
                drain_spool(runtime.open_for_write(policy), name, spool)
            finally:
                os._exit(0)
        return
    repo = runtime.open_for_write(policy)
    ref = push_segment(repo, name, path, _system_identifier(policy, repo, name))
    runtime.audit_log(policy).append("wal-push", asset=name, segment=path.name, size=ref.size)


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
    name = _postgres_asset(policy, asset)
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
    name = _postgres_asset(policy, asset)
    spec = policy.asset(name)
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
    name = _postgres_asset(policy, asset)
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
    """Restore one WAL file (restore_command); exit 1 quietly when the archive lacks it."""
    if spool is not None:
        import shutil

        if not (spool / name).exists():
            raise typer.Exit(1)
        shutil.copyfile(spool / name, dest)
        return
    from lifeboat import runtime
    from lifeboat.assets.postgres.wal import fetch_segment, prefetch

    policy = run_context(ctx).policy()
    asset_name = _postgres_asset(policy, asset)
    creds = runtime.Credentials(recovery_key=recovery_key)
    repo = runtime.open_for_read(policy, creds, purpose="wal fetch", asset=asset_name)
    cache = policy.state_dir / "wal-prefetch" / asset_name
    if not fetch_segment(repo, asset_name, name, dest, cache):
        raise typer.Exit(1)
    if os.fork() == 0:  # prefetch the next segments after PostgreSQL has this one
        try:
            prefetch(repo, asset_name, name, cache)
        finally:
            os._exit(0)


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
    name = _postgres_asset(policy, asset)
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
