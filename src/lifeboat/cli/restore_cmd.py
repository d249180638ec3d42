"""`lifeboat restore ASSET --target T`: one command back, whatever the data class."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import typer

from lifeboat import memory
from lifeboat.cli.app import app
from lifeboat.cli.common import (
    REPOSITORY_HELP,
    console,
    err_console,
    print_json,
    progress_bar,
    read_from,
)
from lifeboat.cli.credentials import (
    PassphraseOption,
    RecoveryKeyOption,
    ShareOption,
    credentials_options,
)
from lifeboat.cli.output import print_lines
from lifeboat.errors import ConfigError

# Each names a different point to recover to: two of them leave the choice to lifeboat.
RECOVERY_TARGETS = ("snapshot", "at", "lsn", "xid", "name", "latest")
RESTORE_HELP = "run 'lifeboat restore --help'"
# What PostgreSQL accepts for each, checked here so a typo is a usage error, not a server
# that refuses to start (or a value that lands in postgresql.auto.conf as typed)
_TARGET_FORMATS = {
    "lsn": (re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}"), "an LSN such as 0/3000060"),
    "xid": (re.compile(r"[0-9]{1,20}"), "a transaction id (a whole number)"),
    "name": (re.compile(r"[^\x00\r\n]{1,63}"), "a restore point name (1 to 63 characters)"),
}


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def check_restore_usage(kind: str, given: dict[str, Any]) -> None:
    """Usage errors (exit 2) before any key is asked for: at most one recovery target, and
    no option the asset's kind would silently ignore."""
    from lifeboat.assets.registry import restore_option_kinds

    used = [option for option, value in given.items() if value not in (None, False)]
    targets = [option for option in RECOVERY_TARGETS if option in used]
    if len(targets) > 1:
        raise ConfigError(
            f"{' and '.join(_flag(t) for t in targets)} are mutually exclusive: give one recovery target",
            hint=RESTORE_HELP,
        )
    for option, (pattern, meaning) in _TARGET_FORMATS.items():
        value = given.get(option)
        if value is not None and not pattern.fullmatch(str(value)):
            raise ConfigError(f"{_flag(option)} {value!r} is not {meaning}", hint=RESTORE_HELP)
    if given.get("xid") is not None and int(given["xid"]) >= 1 << 64:
        raise ConfigError(f"--xid {given['xid']} is out of range", hint=RESTORE_HELP)
    for option in used:
        kinds = restore_option_kinds(option)
        if kinds and kind not in kinds:
            raise ConfigError(
                f"{_flag(option)} does not apply to {kind} assets (only to {', '.join(kinds)})",
                hint=RESTORE_HELP,
            )


def parse_time(text: str | None) -> datetime | None:
    """ISO 8601; a time without zone is local time, as an operator types it."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"cannot parse time {text!r}", hint="use ISO 8601, e.g. 2026-11-24T14:05:00+00:00"
        ) from None
    return value.astimezone(UTC) if value.tzinfo else value.astimezone().astimezone(UTC)


@app.command()
def restore(
    ctx: typer.Context,
    asset: str = typer.Argument(..., help="Asset to restore."),
    target: str = typer.Option(
        None, "--target", help="Directory, data directory, s3://bucket/prefix or dir://path."
    ),
    snapshot: str = typer.Option(None, "--snapshot", help="Snapshot id (prefix)."),
    at: str = typer.Option(None, "--at", help="Point in time (ISO 8601)."),
    lsn: str = typer.Option(None, "--lsn", help="PostgreSQL: recover to this LSN."),
    xid: str = typer.Option(None, "--xid", help="PostgreSQL: recover to this transaction id."),
    name: str = typer.Option(None, "--name", help="PostgreSQL: recover to this named restore point."),
    latest: bool = typer.Option(False, "--latest", help="PostgreSQL: replay all archived WAL."),
    port: int = typer.Option(None, "--port", help="PostgreSQL: port for the restored cluster."),
    start: bool = typer.Option(False, "--start", help="PostgreSQL: start it, wait for recovery, run checks."),
    archive: bool = typer.Option(
        False, "--archive", help="PostgreSQL: keep WAL archiving on (a restore that becomes the new primary)."
    ),
    timeline: int = typer.Option(
        None, "--timeline", help="PostgreSQL: follow this timeline (default: chosen from the archive's tree)."
    ),
    standby: bool = typer.Option(
        False, "--standby", help="PostgreSQL: restore as a standby (standby.signal), never promote."
    ),
    in_place: bool = typer.Option(False, "--in-place", help="Objects: restore the source bucket itself."),
    yes: bool = typer.Option(False, "--yes", help="Confirm an in-place restore."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Merge into a non-empty target: the snapshot's entries replace what holds their names; "
        "nothing else is deleted (files, keys, objects). PostgreSQL: replaces the data directory.",
    ),
    shards: int = typer.Option(
        None,
        "--shards",
        min=1,
        help="Objects: restore in N parallel processes (with --shard: be one of them).",
    ),
    shard: int = typer.Option(None, "--shard", min=0, help="Objects: restore only part I of --shards N."),
    recovery_key: RecoveryKeyOption = None,
    share: ShareOption = None,
    passphrase_file: PassphraseOption = None,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    repository: str = typer.Option(None, "--repository", help=REPOSITORY_HELP),
) -> None:
    """Restore an asset into a target (refuses a non-empty target without --force).

    When the primary repository is unreachable, the copies ([copies.NAME]) are tried in turn."""
    rc = read_from(ctx, repository)
    policy = rc.policy()
    spec = policy.asset(asset)
    check_restore_usage(
        spec.kind,
        {"snapshot": snapshot, "at": at, "lsn": lsn, "xid": xid, "name": name, "latest": latest}
        | {"port": port, "start": start, "in_place": in_place}
        | {"archive": archive, "timeline": timeline, "standby": standby}
        | {"shards": shards, "shard": shard},
    )
    if in_place and (shards is not None or shard is not None):
        raise ConfigError(
            "--in-place restores are not sharded: each worker would see only its part of the source",
            hint="run the in-place restore without --shards/--shard",
        )
    when = parse_time(at)
    if shards is not None and shard is None:
        from lifeboat.cli.shards_cmd import sharded_restore

        given = {"target": target, "snapshot": snapshot, "at": at, "in_place": in_place, "dry_run": dry_run}
        # the workers open the repository with the same credentials
        creds = (["--recovery-key", str(recovery_key)] if recovery_key else []) + [
            arg
            for flag, paths in (("--share", share), ("--passphrase-file", passphrase_file))
            for p in paths or []
            for arg in (flag, str(p))
        ]
        sharded_restore(ctx, spec, shards, given | {"force": force, "when": when}, creds, json_out)
        return
    if shard is not None and shards is None:
        raise ConfigError("--shard I needs --shards N (the number of parts)", hint=RESTORE_HELP)
    if target is None and not in_place:
        raise ConfigError("restore needs --target", hint="restores never write to the source by default")
    from lifeboat.assets.kind import PgRecovery, RestoreRequest
    from lifeboat.services.restore import restore as restore_service

    request = RestoreRequest(
        asset,
        target,
        snapshot_id=snapshot,
        at=when,
        force=force,
        dry_run=dry_run,
        in_place=in_place,
        yes=yes,
        shard=shard,
        shards=shards,
        postgres=PgRecovery(lsn, xid, name, port, start, archive, timeline, standby),
    )
    memory.collect_rarely()  # the collector walked the planned entries again and again
    outcome = restore_service(
        policy,
        credentials_options(recovery_key, share, passphrase_file),
        request,
        chosen=rc.repository,
        progress=progress_bar(f"restore {asset}"),
        notify=lambda line: err_console.print(line, markup=False, soft_wrap=True),
    )
    if json_out:
        print_json(outcome.to_json())
    else:
        if outcome.primary_unreachable is not None:
            console.print(
                f"primary repository unreachable ({outcome.primary_unreachable}): restored from copy "
                f"{outcome.repository!r} ({outcome.repository_url})",
                soft_wrap=True,
                markup=False,
            )
        # no markup: a file named "[red]" is a name; one write: a print per line of a long
        # summary cost more than the restore it reports
        print_lines(outcome.result.summary)
    if not outcome.result.ok:
        raise typer.Exit(1)
