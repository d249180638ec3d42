"""Repository verbs: init, snapshots, check, forget, prune."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from lifeboat import runtime
from lifeboat.cli.app import app
from lifeboat.cli.common import (
    REPOSITORY_HELP,
    console,
    human_bytes,
    print_json,
    progress_bar,
    read_from,
    run_context,
)
from lifeboat.cli.credentials import (
    CustodianPassphraseOption,
    PassphraseOption,
    RecoveryKeyOption,
    ShareOption,
    credentials_options,
    custodian_passphrases,
)
from lifeboat.errors import LifeboatError


@app.command()
def init(
    ctx: typer.Context,
    recovery_key_out: Path = typer.Option(
        None, "--recovery-key-out", help="Write the recovery key here (mode 0600)."
    ),
    shares_out: Path = typer.Option(
        None, "--shares-out", help="Split the recovery key into SLIP-39 shares, one file per custodian."
    ),
    custodian_passphrase: CustodianPassphraseOption = None,
    owner: str = typer.Option(
        None,
        "--owner",
        help="OS user the repository and backup key belong to (archive_command's user); "
        "as root, default: the owner of a postgres asset's PGDATA.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Create the repository, the write-only backup key and the recovery key (all or nothing)."""
    from lifeboat.ops.init import InitRequest, initialise

    policy = run_context(ctx).policy()
    out = recovery_key_out or (
        Path(policy.repository.recovery_key) if policy.repository.recovery_key else None
    )
    request = InitRequest(
        keyfile=Path(policy.repository.keyfile),
        recovery_out=out,
        shares_out=shares_out,
        passphrases=custodian_passphrases(custodian_passphrase),
        owner=owner,
    )
    result = initialise(policy, request)
    if json_out:
        data: dict[str, object] = {
            "repository": result.repository,
            "id": result.id,
            "backup_key": result.backup_key,
            "recovery_fingerprint": result.recovery_fingerprint,
        }
        if result.recovery_key is not None:
            data["recovery_key"] = result.recovery_key
        if result.owner is not None:
            data["owner"] = result.owner
        if shares_out is not None:
            data["shares"] = result.shares
            data["threshold"] = result.threshold
        print_json(data)
        return
    console.print(f"created repository {result.id[:12]} at {result.repository}")
    console.print(f"backup key (write-only): {result.backup_key}")
    if result.owner is not None:
        console.print(f"owned by {result.owner}: its archive_command can push; root-run commands keep that")
    if result.recovery_key is not None:
        console.print(f"recovery key: {result.recovery_key}  (keep it offline; restores need it)")
    if shares_out is not None:
        console.print(
            f"recovery shares: {shares_out} ({result.threshold}-of-{len(result.shares)}: "
            f"any {result.threshold} custodians together can recover)"
        )
        console.print(
            f"next: hand each custodian their own file from {shares_out} (in person or over a channel "
            "only they can read), have each check it with 'lifeboat escrow verify-share FILE', then "
            f"delete {shares_out}: shares left together on this host are the recovery key",
            markup=False,
        )


def _require_known_asset(policy: Any, asset: str | None, snaps: list[Any]) -> None:
    """A mistyped --asset would list or forget nothing and say so as if all were well; an
    asset gone from the policy still counts while the repository holds its snapshots."""
    if asset is not None and asset not in policy.assets and not snaps:
        policy.asset(asset)  # raises: unknown asset, with the known ones


@app.command()
def snapshots(
    ctx: typer.Context,
    asset: str = typer.Option(None, "--asset", help="Only this asset."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    repository: str = typer.Option(None, "--repository", help=REPOSITORY_HELP),
) -> None:
    """List snapshots (needs only the backup key)."""
    policy = read_from(ctx, repository).policy()
    repo = runtime.open_for_write(policy)
    snaps, damaged = repo.snapshots_and_damaged(asset)
    _require_known_asset(policy, asset, snaps)
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
        if damaged:
            raise typer.Exit(1)
        return
    table = Table("id", "time (UTC)", "asset", "kind", "host", "files", "size", "added")
    for s in snaps:
        table.add_row(
            s.short_id,
            s.time.strftime("%Y-%m-%d %H:%M:%S"),
            s.asset,
            s.kind,
            s.host,
            str(s.stats.files),
            human_bytes(s.stats.bytes),
            human_bytes(s.stats.stored_bytes),
        )
    for name, _ in sorted(damaged.items()):
        table.add_row(name.rsplit("/", 1)[-1][:8], "[red]damaged[/red]", "?", "?", "?", "", "", "")
    console.print(table)
    console.print(f"{len(snaps)} snapshot(s)")
    if damaged:
        for name, problem in sorted(damaged.items()):
            console.print(f"[red]damaged[/red] {name}: {problem}", soft_wrap=True)
        console.print(f"{len(damaged)} damaged snapshot(s): run 'lifeboat check' for details")
        raise typer.Exit(1)


def _damaged_json(name: str, problem: str) -> dict[str, object]:
    snapshot_id = name.rsplit("/", 1)[-1]
    return {"id": snapshot_id, "asset": None, "kind": None, "time": None, "damaged": True, "problem": problem}


@app.command()
def check(
    ctx: typer.Context,
    read_data: bool = typer.Option(False, "--read-data", help="Decrypt and hash every stored byte."),
    read_data_subset: str = typer.Option(
        None, "--read-data-subset", help="N/T: read only part N of T of the packs (implies --read-data)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    recovery_key: RecoveryKeyOption = None,
    share: ShareOption = None,
    passphrase_file: PassphraseOption = None,
    repository: str = typer.Option(None, "--repository", help=REPOSITORY_HELP),
) -> None:
    """Verify the repository (or a copy): structure, and with --read-data every byte."""
    policy = read_from(ctx, repository).policy()
    read_data = read_data or read_data_subset is not None
    creds = credentials_options(recovery_key, share, passphrase_file)
    try:
        if creds.given or read_data or policy.repository.recovery_key:
            repo = runtime.open_for_read(policy, creds, purpose="check --read-data" if read_data else "check")
        else:
            repo = runtime.open_for_write(policy)
    except LifeboatError:
        if read_data:
            raise
        repo = runtime.open_for_write(policy)
    with progress_bar("checking") as bar:
        report = repo.check(read_data=read_data, progress=bar, subset=read_data_subset)
    runtime.audit_log(policy, repo).append(
        "check",
        outcome="ok" if report.ok else "failed",
        read_data=read_data,
        subset=report.subset,
        problems=len(report.problems),
    )
    if json_out:
        print_json({"ok": report.ok, **report.__dict__})
    else:
        mode = "structure"
        if read_data:
            mode = f"read-data, {report.packs_read} packs" + (
                f" of subset {report.subset}" if report.subset else ""
            )
        console.print(
            f"checked {report.snapshots} snapshots, {report.packs} packs, {report.chunks} chunks ({mode}"
            + (f", {human_bytes(report.bytes_read)} read)" if read_data else ")")
        )
        for p in report.problems:
            where = f" snapshots: {', '.join(p.snapshots)}" if p.snapshots else ""
            files = (
                f" files: {', '.join(p.files[:10])}" + (" ..." if len(p.files) > 10 else "")
                if p.files
                else ""
            )
            console.print(f"[red]{p.kind}[/red] {p.object}: {p.message}.{where}{files}", soft_wrap=True)
        if report.ok:
            console.print("[green]no problems found[/green]")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def forget(
    ctx: typer.Context,
    asset: str = typer.Option(None, "--asset", help="Only this asset."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be forgotten."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    recovery_key: RecoveryKeyOption = None,
    share: ShareOption = None,
    passphrase_file: PassphraseOption = None,
) -> None:
    """Apply the retention policy: forget snapshots no rule keeps (honours minimum ages and locks)."""
    policy = run_context(ctx).policy()
    repo = runtime.open_for_read(
        policy, credentials_options(recovery_key, share, passphrase_file), purpose="forget"
    )
    if asset is not None:
        _require_known_asset(policy, asset, repo.snapshots(asset))
    report = repo.forget(runtime.keep_rules(policy), dry_run=dry_run, asset=asset)
    wal = runtime.expire_wal(policy, repo, asset=asset, dry_run=dry_run)
    runtime.audit_log(policy, repo).append(
        "forget",
        asset=asset,
        removed=[s.id for s in report.removed],
        locked=[s.id for s in report.locked],
        wal_removed=sum(len(w.removed) for w in wal),
        dry_run=dry_run,
    )
    if json_out:
        print_json(
            {
                "kept": [s.id for s in report.kept],
                "removed": [s.id for s in report.removed],
                "locked": [s.id for s in report.locked],
                "reasons": report.reasons,
                "wal": [w.__dict__ for w in wal],
                "dry_run": dry_run,
            }
        )
        return
    verb = "would forget" if dry_run else "forgot"
    for s in report.removed:
        console.print(f"{verb} {s.short_id} {s.asset} {s.time:%Y-%m-%d %H:%M}")
    for s in report.locked:
        console.print(f"kept {s.short_id} {s.asset}: protected by Object Lock")
    console.print(
        f"{len(report.kept)} kept, {len(report.removed)} {verb.split()[-1]}, {len(report.locked)} locked"
    )
    for w in wal:
        if w.removed or w.locked:
            console.print(
                f"{w.asset}: {verb} {len(w.removed)} WAL files before {w.before} (the oldest kept base "
                f"backup's start)" + (f", {len(w.locked)} kept by Object Lock" if w.locked else "")
            )


@app.command()
def prune(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be removed."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    recovery_key: RecoveryKeyOption = None,
    share: ShareOption = None,
    passphrase_file: PassphraseOption = None,
) -> None:
    """Remove data no snapshot or WAL segment needs (exclusive lock; honours Object Lock)."""
    policy = run_context(ctx).policy()
    repo = runtime.open_for_read(
        policy, credentials_options(recovery_key, share, passphrase_file), purpose="prune"
    )
    report = repo.prune(dry_run=dry_run)
    runtime.audit_log(policy, repo).append(
        "prune",
        packs_removed=report.packs_removed,
        bytes_removed=report.bytes_removed,
        locked=len(report.locked_objects),
        dry_run=dry_run,
    )
    if json_out:
        print_json({**report.__dict__, "dry_run": dry_run})
        return
    verb = "would remove" if dry_run else "removed"
    console.print(
        f"{verb} {report.packs_removed} of {report.packs_total} packs ({human_bytes(report.bytes_removed)}); "
        f"{report.packs_kept_locked} kept by Object Lock"
        + (
            f"; {report.incomplete_removed} leftovers of killed writes swept"
            if report.incomplete_removed
            else ""
        )
    )
