"""What every verb shares: the run context, JSON/text output, progress bars."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer

from lifeboat.cli import output
from lifeboat.cli.output import print_json as print_json  # the verbs' JSON writer, kept here
from lifeboat.progress import NO_PROGRESS, ProgressSink

if TYPE_CHECKING:  # pydantic loads only when a verb needs the policy
    from rich.console import Console

    from lifeboat.policy import Policy


class _ConsoleOnFirstUse:
    """A console made when something is first printed through it: rich costs ~40 ms of
    start-up, and a `--json` run (most scripted ones) prints nothing through it."""

    def __init__(self, make: Callable[[], Console]) -> None:
        self._make = make  # output.console / output.err_console: one console per stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._make(), name)


console = cast("Console", _ConsoleOnFirstUse(output.console))
err_console = cast("Console", _ConsoleOnFirstUse(output.err_console))


@dataclass
class RunContext:
    """Options given before the verb; the policy is loaded lazily, once."""

    config_path: Path
    debug: bool = False
    # --repository NAME: read from [copies.NAME] instead of the primary repository
    repository: str | None = None
    _policy: Policy | None = field(default=None, repr=False)

    def policy(self) -> Policy:
        """The policy (loaded on first use), reading from the chosen copy if any."""
        if self._policy is None:
            from lifeboat.assets.registry import load_policy

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


class RichProgress(ProgressSink):
    """A rich progress bar on stderr; silent when stderr is not a terminal."""

    def __init__(self, description: str) -> None:
        # rich.progress costs ~15 ms of start-up: only the verbs that draw a bar load it
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._enabled = output.err_console().is_terminal
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=output.err_console(),
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
    """A bar on a terminal; nothing (and no rich) when stderr is a pipe or a file."""
    if not output.is_terminal(sys.stderr):
        yield NO_PROGRESS
        return
    with RichProgress(description) as bar:
        yield bar


def human_bytes(n: float) -> str:
    """IEC units (KiB, MiB, GiB): the one size format of human output."""
    from lifeboat.units import format_bytes

    return format_bytes(n)
