"""The `lifeboat` executable: `wal push`, `wal fetch`, `status`, `snapshots` and `--version` without
typer, everything else through `cli/app.py`.

PostgreSQL runs `wal push` once per WAL segment (archive_command) and `wal fetch` once per
segment it replays (restore_command), so their start-up bounds archiving and recovery
speed; monitoring polls `status` and scripts list `snapshots`. typer, rich's help and every
verb module cost more than these commands do. Only the plain forms take the fast path: any
other option (`--help`, `--debug`, a global `--repository`, a typo) goes to typer, which
owns the help, the usage errors and the tracebacks. Each fast command's body lives in a
module both paths call (`wal_run`, `status_run`, `snapshots_run`): one behaviour, one output.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from lifeboat import memory
from lifeboat.cli import method_cache
from lifeboat.errors import LifeboatError
from lifeboat.redact import redact

# Before any dataclass of a command is defined (the modules above define none): each takes
# its compiled methods from the build's record. For the whole process, on purpose: the
# suite's fork server imports this module, and its children run every command this way.
method_cache.install()

# per command: its options that take a value, its flags, and how many arguments it takes
_COMMANDS: dict[str, tuple[frozenset[str], frozenset[str], int]] = {
    "wal push": (frozenset({"--asset"}), frozenset({"--async"}), 1),
    "wal fetch": (frozenset({"--asset", "--spool", "--recovery-key"}), frozenset(), 2),
    "status": (frozenset(), frozenset({"--json"}), 0),
    "snapshots": (frozenset({"--asset", "--repository"}), frozenset({"--json"}), 0),
}
_CONFIG = frozenset({"--config", "-c"})


@dataclass
class HotCall:
    """A fast command's line, parsed as typer would parse it."""

    command: str  # a key of _COMMANDS
    config: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    args: list[str] = field(default_factory=list)


def _take_option(args: list[str], i: int, names: frozenset[str]) -> tuple[str, str, int] | None:
    """``--name value`` or ``--name=value`` at ``args[i]``: (name, value, next index)."""
    name, eq, value = args[i].partition("=")
    if name not in names or (eq and not name.startswith("--")):  # click reads `-c=x` as "=x"
        return None
    if eq:
        return name, value, i + 1
    if i + 1 >= len(args):
        return None
    return name, args[i + 1], i + 2


def _command_at(args: list[str], i: int) -> str | None:
    """The fast command whose words start at ``args[i]`` (a verb, or a verb and a subverb)."""
    for name in _COMMANDS:
        words = name.split()
        if args[i : i + len(words)] == words:
            return name
    return None


def parse_hot(args: list[str]) -> HotCall | None:
    """The call when ``args`` is a plain fast command, else None (typer handles it)."""
    i, config = 0, None
    while i < len(args) and args[i].startswith("-"):
        taken = _take_option(args, i, _CONFIG)
        if taken is None:
            return None
        _, config, i = taken
    command = _command_at(args, i)
    if command is None:
        return None
    call = HotCall(command=command, config=config)
    valued, flags, nargs = _COMMANDS[command]
    i += len(command.split())
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "-":
            call.args.append(arg)
            i += 1
        elif arg in flags:
            call.flags.add(arg)
            i += 1
        elif (taken := _take_option(args, i, valued)) is not None:
            call.options[taken[0]] = taken[1]
            i = taken[2]
        else:
            return None
    # an empty value means something else to typer (`--spool ""` is Path(".")): its call
    if len(call.args) != nargs or config == "" or "" in call.args or "" in call.options.values():
        return None
    return call


def _optional_path(value: str | None) -> Path | None:
    return Path(value) if value else None


def run_hot(call: HotCall) -> int:
    """Run the parsed call; its exit code (fetch: 1 when the archive lacks the segment,
    status: 1 on a breach, snapshots: 1 when one is damaged)."""
    if TYPE_CHECKING:
        from lifeboat.policy import Policy

    config = Path(call.config or os.environ.get("LIFEBOAT_CONFIG", "lifeboat.toml"))

    def policy() -> Policy:
        from lifeboat.assets.registry import load_policy

        return load_policy(config)

    asset = call.options.get("--asset")
    json_out = "--json" in call.flags
    if call.command == "status":
        from lifeboat.cli.status_run import probe_child_for, status

        child = probe_child_for(config)  # first: one thread, and little imported yet
        from lifeboat.cli import policy_slice

        return status(*policy_slice.status_slice(config), json_out, policy, child)
    from lifeboat.cli import policy_slice

    if call.command == "snapshots":
        from lifeboat.cli.snapshots_run import snapshots

        copy = call.options.get("--repository")
        settings = policy().reading_from(copy) if copy else policy_slice.listing_slice(config)
        return snapshots(settings, asset, json_out)
    from lifeboat.cli import wal_run

    if call.command == "wal push":
        wal_run.push(*policy_slice.wal_slice(config, asset), Path(call.args[0]), "--async" in call.flags)
        return 0
    key = call.options.get("--recovery-key") or os.environ.get("LIFEBOAT_RECOVERY_KEY")
    spool = _optional_path(call.options.get("--spool"))
    load = partial(policy_slice.wal_slice, config, asset)
    return wal_run.fetch(load, call.args[0], Path(call.args[1]), spool, _optional_path(key))


def _error(line: str) -> None:
    from lifeboat.cli.output import print_stderr  # the error path's alone

    print_stderr([line])  # an internal error's text may name a file a writer chose


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: locks released, nothing half-committed


def _no_pydantic_plugins() -> None:
    """pydantic's plug-in loader imports importlib.metadata (email, zipfile, csv: ~25 ms of
    CPU, a sixth of a WAL push) before it reads PYDANTIC_DISABLE_PLUGINS. lifeboat uses no
    plug-in, so every command gets a loader that finds none. Its one caller in the pinned
    pydantic is `plugin/_schema_validator.py` (`from ._loader import get_plugins`); a
    pydantic that needs more of it fails `tests/cli/test_startup.py`, not silently."""
    if "pydantic.plugin._loader" not in sys.modules:
        import types

        loader = types.ModuleType("pydantic.plugin._loader")
        loader.get_plugins = tuple  # type: ignore[attr-defined]  # no plug-ins: ()
        sys.modules["pydantic.plugin._loader"] = loader


def collector_off_but_in_children() -> None:
    """A fast command is short and its work bounded: the cyclic collector would only walk,
    again and again, the objects its imports made and the listing it builds (~5 ms of a
    120 ms `status`, ~35 ms of `snapshots` at 10,000 snapshots, peak RSS unchanged), and
    reference counts free the rest. A child forked to go on after it (the WAL drainer, the
    prefetcher) collects."""
    gc.disable()
    os.register_at_fork(after_in_child=gc.enable)


def without_the_aws_runtime() -> None:
    """The fast commands never fetch a bucket's objects (assets/objects/native_requests.py), but
    botocore, which an S3 repository needs, imports the AWS Common Runtime just to find
    out whether it is installed: ~45 ms of each start, loading its shared library. Marked
    missing here (None in sys.modules: the import system's "not found"), botocore signs
    in Python, as it does wherever the runtime is not installed."""
    sys.modules.setdefault("awscrt", None)  # type: ignore[arg-type]


def _run_hot_or_exit(call: HotCall) -> NoReturn:
    """As `cli/app.py` maps outcomes: one error line (+ hint), the error's exit code."""
    memory.limit_arenas()
    collector_off_but_in_children()
    without_the_aws_runtime()
    signal.signal(signal.SIGTERM, _interrupt)
    failed = True  # an error, not an answer: a fetch's 1 ("not archived") is only returned
    try:
        code = run_hot(call)
        failed = False
    except LifeboatError as exc:
        from lifeboat.cli.output import print_error  # the error path's alone

        print_error(redact(exc.message), redact(exc.hint) if exc.hint else None)
        code = exc.exit_code
    except KeyboardInterrupt:
        _error("lifeboat: interrupted")
        code = 130
    except Exception as exc:  # genuine bugs
        from lifeboat.internal_error import record_internal_error

        record_internal_error(exc)
        _error(
            f"lifeboat: internal error: {type(exc).__name__}: {redact(str(exc))} "
            "(run with --debug for details)"
        )
        code = 70
    if call.command == "wal fetch" and failed and code != 130:
        from lifeboat.cli.wal_run import fetch_failure_code

        code = fetch_failure_code()
    # The interpreter's last collection at exit walks every object the imports made: ~15 ms
    # of a 120 ms `status` (measured). Frozen, they are skipped; they die with the process.
    gc.freeze()
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    # pydantic looks for plug-ins in every installed distribution's entry points the first
    # time it builds a model (importlib.metadata, ~20 ms); lifeboat uses none
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    # botocore signs with the AWS Common Runtime whenever it is installed: lifeboat installs
    # it for a bucket's small GETs and PUTs alone (assets/objects/native_requests.py), so
    # botocore's own calls stay as they were, in Python (an operator may still set
    # BOTO_DISABLE_CRT=false)
    os.environ.setdefault("BOTO_DISABLE_CRT", "true")
    _no_pydantic_plugins()  # every command: typer builds a pydantic TypeAdapter per option
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:  # what inventory scripts and health checks ask: typer costs 0.2 s
        from lifeboat import __version__

        print(f"lifeboat {__version__}")
        sys.exit(0)
    call = parse_hot(args)
    if call is not None:
        _run_hot_or_exit(call)
    from lifeboat.cli import import_readahead
    from lifeboat.cli.verbs import BY_NEXT_WORD, VERB_MODULES, invoked_object, invoked_verb

    verb = invoked_verb(args)
    if verb in VERB_MODULES:  # a typo gets no list
        import_readahead.start(verb, invoked_object(args) if verb in BY_NEXT_WORD else None)
    from lifeboat.cli.app import main as typer_main

    typer_main(argv)
