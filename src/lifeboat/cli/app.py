"""The `lifeboat` command: global options, verb registration, error-to-exit mapping."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from typing import NoReturn

import typer

# typer vendors click: its usage errors are not `click.UsageError` (the pinned typer's
# classes, public in all but the module name)
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from lifeboat import __version__, memory
from lifeboat.cli.common import REPOSITORY_HELP, RunContext, console, err_console
from lifeboat.cli.output import print_error, print_stderr
from lifeboat.cli.verbs import ALL_VERB_MODULES, VERB_MODULES, invoked_verb
from lifeboat.errors import EXIT_USAGE, LifeboatError
from lifeboat.internal_error import record_internal_error
from lifeboat.redact import redact

app = typer.Typer(
    name="lifeboat",
    help="Provable recoverability: backups, restores and measured drills for PostgreSQL, "
    "object storage and key material.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _show_version(value: bool) -> None:
    if value:
        console.print(f"lifeboat {__version__}", markup=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
    ),
    config: Path = typer.Option(
        None, "--config", "-c", help="Policy file (default: $LIFEBOAT_CONFIG or ./lifeboat.toml)."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    repository: str = typer.Option(None, "--repository", help=REPOSITORY_HELP),
) -> None:
    path = config or Path(os.environ.get("LIFEBOAT_CONFIG", "lifeboat.toml"))
    if repository is not None and ctx.invoked_subcommand in WRITES_PRIMARY:
        raise UsageError(
            f"--repository reads from a copy; '{ctx.invoked_subcommand}' works on the primary only",
            ctx,
        )
    ctx.obj = RunContext(config_path=path, debug=debug, repository=repository)


# verbs that write the primary repository: a copy is only ever written by `lifeboat copy`
WRITES_PRIMARY = frozenset({"backup", "init", "copy", "wal", "keys", "daemon", "demo"})


def _register(args: list[str]) -> None:
    """Each verb module adds its commands to `app` (typer's plug-in pattern)."""
    import importlib

    for module in VERB_MODULES.get(invoked_verb(args) or "", ALL_VERB_MODULES):
        importlib.import_module(f"lifeboat.cli.{module}")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: locks released, nothing half-committed


_DID_YOU_MEAN = re.compile(
    r"^(?P<message>.*?)[.\s]*(?P<suggestion>(Did you mean|\(Possible options:).*)$", re.S
)


def usage_error_lines(exc: UsageError) -> tuple[str, str]:
    """Click's message as one error line, and a hint naming the closest verb or option
    (click puts its "Did you mean" into the message) and the help to read."""
    text = " ".join(exc.format_message().split())
    suggestion = ""
    match = _DID_YOU_MEAN.match(text)
    if match:
        text = match["message"]
        suggestion = match["suggestion"].strip("()").rstrip(".?")
        one_of = "Did you mean" + (" one of" if "," in suggestion else "")
        suggestion = suggestion.replace("Possible options:", one_of)
        suggestion = suggestion[0].lower() + suggestion[1:] + "? "
    text = (text[:1].lower() + text[1:]).rstrip(".")
    command = exc.ctx.command_path if exc.ctx is not None else "lifeboat"
    return text, f"{suggestion}run '{command} --help'"


def _usage_exit(exc: UsageError) -> NoReturn:
    if isinstance(exc, NoArgsIsHelpError):  # `lifeboat` or `lifeboat policy` alone: the help
        exc.show()
        sys.exit(EXIT_USAGE)
    message, hint = usage_error_lines(exc)
    err_console.print(f"lifeboat: error: {message}", markup=False, soft_wrap=True)
    err_console.print(f"hint: {hint}", markup=False, soft_wrap=True)
    sys.exit(EXIT_USAGE)


def main(argv: list[str] | None = None) -> None:
    memory.limit_arenas()
    signal.signal(signal.SIGTERM, _interrupt)
    args = argv if argv is not None else sys.argv[1:]
    _register(args)
    debug = "--debug" in args
    try:
        code = app(args=argv, prog_name="lifeboat", standalone_mode=False)
    except LifeboatError as exc:
        if debug:
            err_console.print_exception()
        print_error(redact(exc.message), redact(exc.hint) if exc.hint else None)
        sys.exit(exc.exit_code)
    except UsageError as exc:
        _usage_exit(exc)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("lifeboat: aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("lifeboat: interrupted")
        sys.exit(130)
    except Exception as exc:  # genuine bugs
        record_internal_error(exc)
        if debug:
            raise
        detail = f"{type(exc).__name__}: {redact(str(exc))}"
        print_stderr([f"lifeboat: internal error: {detail} (run with --debug for details)"])
        sys.exit(70)
    sys.exit(code if isinstance(code, int) else 0)
