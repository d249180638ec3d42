"""`lifeboat restore ASSET --target T`: one command back, whatever the data class."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from lifeboat import runtime
from lifeboat.cli.app import app
from lifeboat.cli.common import (
    REPOSITORY_HELP,
    console,
    err_console,
    human_bytes,
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
from lifeboat.errors import ConfigError, NotFoundError, StorageError
from lifeboat.redact import redact

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


def refuse_future_time(policy: Any, repo: Any, asset: str, when: datetime | None) -> None:
    """A time in the future would quietly mean "the latest": refuse it and say what is."""
    if when is None or when <= datetime.now(UTC):
        return
    from lifeboat.ops.status import asset_status

    newest = next((s.last_backup for s in asset_status(policy, repo) if s.asset == asset), None)
    raise ConfigError(
        f"--at {when.isoformat(timespec='seconds')} is in the future; the newest restorable time "
        f"of {asset} is {newest or 'none (no backup yet)'}",
        hint="give a time in the past, or --latest (postgres) or no target for the newest state",
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
    creds = credentials_options(recovery_key, share, passphrase_file)
    policy, repo, fallback = _open_repository(policy, rc.repository, creds, asset)
    refuse_future_time(policy, repo, spec.name, when)
    audit = runtime.audit_log(policy, repo)
    options: dict[str, Any] = {
        "target": target,
        "snapshot_id": snapshot,
        "at": when,
        "lsn": lsn,
        "xid": xid,
        "name": name,
        "latest": latest,
        "port": port,
        "start": start,
        "in_place": in_place,
        "yes": yes,
        "dry_run": dry_run,
        "force": force,
        "archive": archive,
        "timeline": timeline,
        "standby": standby,
        "shards": shards,
        "shard": shard,
    }
    if target is None and not in_place:
        raise ConfigError("restore needs --target", hint="restores never write to the source by default")
    with progress_bar(f"restore {asset}") as bar:
        result = _dispatch(policy, spec, repo, options, bar)
    source = rc.repository or (fallback[0] if fallback else None)
    audit.append(
        "restore",
        asset=asset,
        target=str(target),
        snapshot=result.get("snapshot"),
        outcome="ok" if result.get("ok", True) else "failed",
        **({"repository": source} if source else {}),
    )
    if source:
        result = {**result, "repository": source, "repository_url": str(policy.repository.url)}
    if fallback:
        result["primary_unreachable"] = fallback[1]
    if json_out:
        print_json(result)
    else:
        if fallback:
            console.print(
                f"primary repository unreachable ({fallback[1]}): restored from copy {fallback[0]!r} "
                f"({policy.repository.url})",
                soft_wrap=True,
                markup=False,
            )
        _print_summary(asset, result)
    if not result.get("ok", True):
        raise typer.Exit(1)


def _open_repository(
    policy: Any, chosen: str | None, creds: Any, asset: str
) -> tuple[Any, Any, tuple[str, str] | None]:
    """The repository to restore from: the primary, or when it cannot be reached (an error
    that is not "not found": a missing snapshot is missing everywhere) the first copy that
    opens. Returns the policy reading from it, the repository, and (copy, why) on fallback."""
    purpose = f"restore {asset}"
    try:
        return policy, runtime.open_for_read(policy, creds, purpose=purpose, asset=asset), None
    except StorageError as exc:
        if chosen is not None or isinstance(exc, NotFoundError) or not policy.copies:
            raise
        primary_error = exc
    for name in sorted(policy.copies):
        candidate = policy.reading_from(name)
        err_console.print(
            f"lifeboat: primary repository unreachable ({primary_error.message}); "
            f"trying copy {name!r} ({candidate.repository.url})",
            markup=False,
            soft_wrap=True,
        )
        try:
            repo = runtime.open_for_read(candidate, creds, purpose=f"{purpose} from copy {name}", asset=asset)
        except (StorageError, ConfigError) as exc:  # ConfigError: nothing copied there yet
            err_console.print(
                f"lifeboat: copy {name!r} cannot be read either ({redact(exc.message)})", markup=False
            )
            continue
        return candidate, repo, (name, primary_error.message)
    raise StorageError(
        f"{primary_error.message}; no copy could be read either",
        hint="check the endpoints of [repository] and [copies.*]",
    )


def _dispatch(policy: Any, spec: Any, repo: Any, options: dict[str, Any], bar: Any) -> dict[str, Any]:
    if spec.kind == "files":
        from lifeboat.assets.files import restore_snapshot

        info = repo.find_snapshot(spec.name, snapshot_id=options["snapshot_id"], at=options["at"])
        stats = restore_snapshot(repo, info, Path(options["target"]), force=options["force"], progress=bar)
        return {
            "ok": True,
            "asset": spec.name,
            "snapshot": info.id,
            "target": options["target"],
            "files": stats.files,
            "dirs": stats.dirs,
            "symlinks": stats.symlinks,
            "bytes": stats.bytes,
            "verified": stats.verified,
            "seconds": stats.seconds,
        }
    from lifeboat.assets.registry import restore_asset

    return restore_asset(policy, spec, repo, options, bar)


def _print_summary(asset: str, result: dict[str, Any]) -> None:
    if "files" in result and "bytes" in result and not result.get("summary"):  # else the asset's own
        console.print(
            f"{asset}: restored {result['files']} files ({human_bytes(result['bytes'])}), "
            f"{result.get('dirs', 0)} dirs, {result.get('symlinks', 0)} symlinks from snapshot "
            f"{str(result.get('snapshot', ''))[:12]} into {result.get('target')} "
            f"in {result.get('seconds', 0):.1f}s; "
            f"{result.get('verified', 0)} files verified"
        )
    for line in result.get("summary", []):
        console.print(line, soft_wrap=True)
