"""What `snapshots` does, without typer: `cli/entry.py` runs it directly and
`cli/repo_cmds.py` wraps it as a command, so both print the same bytes."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol

from lifeboat.cli.output import console, print_json
from lifeboat.errors import ConfigError
from lifeboat.runtime import ReadSettings

if TYPE_CHECKING:
    from lifeboat.crypto.credentials import Credentials


class ListingSettings(ReadSettings, Protocol):
    """A `Policy`, or the slice of one `cli/entry.py` keeps (cli/policy_slice.py)."""

    @property
    def assets(self) -> Collection[str]: ...


LISTING_COLUMNS = ("id", "time (UTC)", "asset", "kind", "host", "files", "size", "added")
NUMBER_COLUMNS = frozenset({5, 6, 7})


def snapshots(
    policy: ListingSettings, asset: str | None, json_out: bool, creds: Credentials | None = None
) -> int:
    """List the snapshots (of one asset); the exit code (1 when some are damaged). With the
    backup key alone, other writers' sealed headers are counted, not listed."""
    from lifeboat import runtime

    if creds is not None:
        repo = runtime.open_for_read(policy, creds, purpose="snapshots")
    else:
        repo = runtime.open_for_write(policy)
    try:
        listing = repo.snapshot_listing(assets=list(policy.assets))
    finally:
        repo.close()
    snaps = [s for s in listing.accepted if asset is None or s.asset == asset]
    damaged = listing.damaged
    refused = [r for r in listing.refused if asset is None or r.asset == asset]
    if asset is not None and asset not in policy.assets and not snaps:  # as `forget` does
        raise ConfigError.unknown_asset(asset, policy.assets)
    if json_out:
        print_json(
            [
                {
                    "id": s.id,
                    "asset": s.asset,
                    "kind": s.kind,
                    "time": s.time,
                    "host": s.host,
                    "labels": s.labels,
                    "stats": s.stats,
                    "parent": s.parent,
                }
                for s in snaps
            ]
            + [_damaged_json(name, problem) for name, problem in sorted(damaged.items())]
        )
        return 1 if damaged else 0
    from rich.markup import escape

    from lifeboat.cli.columns import aligned
    from lifeboat.units import format_bytes

    rows = [
        [
            s.short_id,
            s.time.isoformat(" ", "seconds")[:19],  # as strftime("%Y-%m-%d %H:%M:%S"), in C
            s.asset,
            s.kind,
            s.host,
            str(s.stats.files),
            format_bytes(s.stats.bytes),
            format_bytes(s.stats.stored_bytes),
        ]
        for s in snaps
    ]
    rows += [[name.rsplit("/", 1)[-1][:8], "damaged", "?", "?", "?", "", "", ""] for name in sorted(damaged)]
    header, *lines = aligned(LISTING_COLUMNS, rows, right=NUMBER_COLUMNS)
    out = console()
    # written as plain text (a host or asset name is never read as markup), not re-wrapped:
    # the rows straight to the console's file (rich made objects of every line: half the
    # time of printing 10,000 rows); ``aligned`` escaped what a terminal would act on
    out.out(header, style="bold", highlight=False)
    out.file.write("".join(line + "\n" for line in lines[: len(snaps)]))
    if damaged:
        out.out("".join(line + "\n" for line in lines[len(snaps) :]), style="red", highlight=False, end="")
    out.print(f"{len(snaps)} snapshot(s)")
    sealed = listing.sealed_summary()
    if sealed:
        out.print(sealed, soft_wrap=True)
    for r in refused:  # listed by no reader; `check` and `status` fail on them
        out.print(f"[yellow]refused[/yellow] {escape(r.describe())}", soft_wrap=True)
    if damaged:
        for name, problem in sorted(damaged.items()):
            out.print(f"[red]damaged[/red] {escape(name)}: {escape(problem)}", soft_wrap=True)
        out.print(f"{len(damaged)} damaged snapshot(s): run 'lifeboat check' for details")
    return 1 if damaged else 0


def _damaged_json(name: str, problem: str) -> dict[str, object]:
    snapshot_id = name.rsplit("/", 1)[-1]
    return {"id": snapshot_id, "asset": None, "kind": None, "time": None, "damaged": True, "problem": problem}
