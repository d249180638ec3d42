"""Where command output goes, without typer: the consoles and the JSON writer. The fast
paths of `cli/entry.py` print through here, so a command prints the same bytes whichever
way it started; rich loads only when a console is first asked for (`--json` needs none)."""

from __future__ import annotations

import sys
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from lifeboat.escaped_text import shown

if TYPE_CHECKING:
    from rich.console import Console

# Lines as long as any value when the output is a pipe or a file: human output is read
# with `less -S`, grep or an editor, where a path broken over two lines or a table cell cut
# to `importa…` is useless (`--json` is the machine format). rich honours NO_COLOR itself.
PIPE_WIDTH = 100_000


def make_console(stderr: bool = False) -> Console:
    """A console that fits the terminal when there is one, and never re-wraps otherwise. A
    COLUMNS inherited from a terminal does not count for a pipe (readline exports it into
    the environment of every child of an interactive Python or shell). No emoji codes: a
    file named `a:fire:b.pem` is printed as it is named."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    piped = not is_terminal(stream)
    return Console(stderr=stderr, highlight=False, emoji=False, width=PIPE_WIDTH if piped else None)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (False for a closed or replaced one)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


@cache
def console() -> Console:
    """The one console of standard output (typer's verbs and the fast paths share it)."""
    return make_console()


@cache
def err_console() -> Console:
    return make_console(stderr=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def print_lines(lines: list[str], stream: TextIO | None = None) -> None:
    """Lines of plain text on standard output (or ``stream``), never re-wrapped, each character a terminal
    would act on shown escaped as Python writes it (an escape sequence in a restored file's
    name as ``\\x1b[2J``, a carriage return as ``\\r``), so that a name cannot move the
    cursor, clear the screen or retitle the window. rich, which printed a restore's summary
    before, takes out five control codes and passes escape sequences through; it also took
    ~40 ms to import and set up at the end of a restore that needed nothing else of it."""
    out = sys.stdout if stream is None else stream
    out.write("".join(shown(line) + "\n" for line in lines))
    out.flush()


def print_error(message: str, hint: str | None = None) -> None:
    """A command's error on standard error, each line of it (and of its hint) as
    ``print_lines`` writes it: an error names paths and objects a writer may have chosen."""
    lines = f"lifeboat: error: {message}".split("\n")
    if hint:
        lines += f"hint: {hint}".split("\n")
    print_stderr(lines)


def print_stderr(lines: list[str]) -> None:
    """``print_lines`` on standard error; nothing when it is closed (never on standard
    output, where a script may be reading JSON)."""
    if sys.stderr is not None:
        print_lines(lines, sys.stderr)


def print_json(data: Any) -> None:
    """``data`` as indented JSON on standard output. orjson, not json: 10,000 snapshot rows
    took a second to print (dataclasses and times serialised natively; the rest, such as
    paths and sets, through ``_json_default``); non-ASCII text is written as UTF-8."""
    import orjson

    options = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
    sys.stdout.write(orjson.dumps(data, default=_json_default, option=options).decode() + "\n")
