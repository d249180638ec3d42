"""The `lifeboat` command: global options, verb registration, error-to-exit mapping."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import typer

from lifeboat import memory
from lifeboat.cli.common import RunContext, err_console
from lifeboat.errors import EXIT_USAGE, LifeboatError
from lifeboat.redact import redact

app = typer.Typer(
    name="lifeboat",
    help="Provable recoverability: backups, restores and measured drills for PostgreSQL, "
    "object storage and key material.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Path = typer.Option(
        None, "--config", "-c", help="Policy file (default: $LIFEBOAT_CONFIG or ./lifeboat.toml)."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    path = config or Path(os.environ.get("LIFEBOAT_CONFIG", "lifeboat.toml"))
    ctx.obj = RunContext(config_path=path, debug=debug)


def _register() -> None:
    """Each verb module adds its commands to `app`; one import line per module."""
    from lifeboat.cli import (  # noqa: F401
        actions_cmd,
        audit_cmd,
        backup_cmd,
        daemon_cmd,
        demo_cmd,
        drill_cmd,
        escrow_cmd,
        evidence_cmd,
        keys_cmd,
        objects_cmd,
        pg_cmd,
        policy_cmd,
        repo_cmds,
        report_cmd,
        restore_cmd,
        unlock_cmd,
        wal_cmd,
    )


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: locks released, nothing half-committed


def main(argv: list[str] | None = None) -> None:
    memory.limit_arenas()
    signal.signal(signal.SIGTERM, _interrupt)
    _register()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = app(args=argv, standalone_mode=False)
    except LifeboatError as exc:
        if debug:
            err_console.print_exception()
        err_console.print(f"lifeboat: error: {redact(exc.message)}", markup=False, soft_wrap=True)
        if exc.hint:
            err_console.print(f"hint: {redact(exc.hint)}", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("lifeboat: aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("lifeboat: interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and genuine bugs
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(EXIT_USAGE)
        if debug:
            raise
        err_console.print(
            f"lifeboat: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
            markup=False,
            soft_wrap=True,
        )
        sys.exit(70)
    sys.exit(code if isinstance(code, int) else 0)
