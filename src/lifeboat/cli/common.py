"""What every verb shares: the run context, JSON/text output, progress bars."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from lifeboat.progress import ProgressSink

# Lines as long as any value when the output is a pipe or a file: human output is read
# with `less -S`, grep or an editor, where a path broken over two lines or a table cell cut
# to `importa…` is useless (`--json` is the machine format). rich honours NO_COLOR itself.
PIPE_WIDTH = 100_000


def make_console(stderr: bool = False) -> Console:
    """A console that fits the terminal when there is one, and never re-wraps otherwise. A
    COLUMNS inherited from a terminal does not count for a pipe (readline exports it into
    the environment of every child of an interactive Python or shell)."""
    stream = sys.stderr if stderr else sys.stdout
    piped = not _isatty(stream)
    return Console(stderr=stderr, highlight=False, width=PIPE_WIDTH if piped else None)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


console = make_console()
err_console = make_console(stderr=True)


@dataclass
class RunContext:
    """Options given before the verb; the policy is loaded lazily, once."""

    config_path: Path
    debug: bool = False
    # --repository NAME: read from [copies.NAME] instead of the primary repository
    repository: str | None = None
    _policy: Any = field(default=None, repr=False)

    def policy(self) -> Any:
        if self._policy is None:
            from lifeboat.policy import load_policy

            self._policy = load_policy(self.config_path)
        return self._policy.reading_from(self.repository)


REPOSITORY_HELP = "Read from this copy of the repository ([copies.NAME]) instead of the primary."


def read_from(ctx: typer.Context, repository: str | None) -> RunContext:
    """The run context, reading from ``repository`` (a [copies.NAME]) when one is given."""
    rc = run_context(ctx)
    if repository is not None:
        rc.repository = repository
    return rc


def run_context(ctx: typer.Context) -> RunContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, RunContext)
    return obj


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


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_json_default, indent=2, sort_keys=False) + "\n")


class RichProgress(ProgressSink):
    """A rich progress bar on stderr; silent when stderr is not a terminal."""

    def __init__(self, description: str) -> None:
        self._enabled = err_console.is_terminal
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
            disable=not self._enabled,
        )
        self._task = self._progress.add_task(description, total=None)

    def start(self, total_bytes: int | None) -> None:
        self._progress.update(self._task, total=total_bytes)

    def advance(self, nbytes: int) -> None:
        if self._enabled:  # called per chunk and per object: a disabled bar must cost nothing
            self._progress.advance(self._task, nbytes)

    def note(self, message: str) -> None:
        self._progress.update(self._task, description=message)

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


@contextmanager
def progress_bar(description: str) -> Iterator[ProgressSink]:
    with RichProgress(description) as bar:
        yield bar


def human_bytes(n: float) -> str:
    """IEC units (KiB, MiB, GiB): the one size format of human output."""
    from lifeboat.units import format_bytes

    return format_bytes(n)
