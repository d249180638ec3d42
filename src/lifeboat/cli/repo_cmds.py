"""Repository verbs: init, snapshots, check, forget, prune."""

from __future__ import annotations

from pathlib import Path

import typer

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
from lifeboat.services import check as check_service
from lifeboat.services import retention


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
            "drill_key_fingerprint": result.drill_key_fingerprint,
            "writer": result.writer,
        }
        if result.recovery_key is not None:
            data["recovery_key"] = result.recovery_key
        if result.owner is not None:
            data["owner"] = result.owner
        if shares_out is not None:
            data["shares"] = result.shares
            data["threshold"] = result.threshold
        if result.key_material_escrow is not None:
            data["key_material_escrow"] = result.key_material_escrow
        print_json(data)
        return
    console.print(f"created repository {result.id[:12]} at {result.repository}")
    console.print(f"backup key (write-only, writer {result.writer}, every asset): {result.backup_key}")
    console.print(
        f"drill evidence signing key: {result.drill_key_fingerprint}  (auditors pin it: "
        "lifeboat evidence verify BUNDLE --key FINGERPRINT)",
        markup=False,
    )
    if result.owner is not None:
        console.print(f"owned by {result.owner}: its archive_command can push; root-run commands keep that")
    if result.recovery_key is not None:
        console.print(f"recovery key: {result.recovery_key}  (keep it offline; restores need it)")
    if shares_out is not None:
        console.print(
            f"recovery shares: {shares_out} ({result.threshold}-of-{len(result.shares)}: "
            f"any {result.threshold} custodians together can recover)"
        )
        if result.key_material_escrow is not None:
            console.print(
                f"key material (kind keys) is sealed to escrow key {result.key_material_escrow}: each "
                f"share file also holds that custodian's share of it; no key file opens key material, "
                f"only {result.threshold} custodians' shares together",
                markup=False,
            )
        console.print(
            f"next: hand each custodian their own file from {shares_out} (in person or over a channel "
            "only they can read), have each check it with 'lifeboat escrow verify-share FILE', then "
            f"delete {shares_out}: shares left together on this host are the recovery key",
            markup=False,
        )


@app.command()
def snapshots(
    ctx: typer.Context,
    asset: str = typer.Option(None, "--asset", help="Only this asset."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    recovery_key: RecoveryKeyOption = None,
    share: ShareOption = None,
    passphrase_file: PassphraseOption = None,
    repository: str = typer.Option(None, "--repository", help=REPOSITORY_HELP),
) -> None:
    """List snapshots. With the backup key: this writer's own (other writers' headers are
    sealed to it and only counted); with the recovery key or shares: every writer's."""
    from lifeboat.cli.snapshots_run import snapshots as run_snapshots

    creds = credentials_options(recovery_key, share, passphrase_file) if recovery_key or share else None
    code = run_snapshots(read_from(ctx, repository).policy(), asset, json_out, creds)
    if code:
        raise typer.Exit(code)


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
    report = check_service.check(
        policy, creds, read_data=read_data, subset=read_data_subset, progress=progress_bar
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
        for warning in report.warnings:
            console.print(f"[yellow]warning[/yellow]: {warning}", soft_wrap=True)
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
    result = retention.forget(
        run_context(ctx).policy(),
        credentials_options(recovery_key, share, passphrase_file),
        asset=asset,
        dry_run=dry_run,
    )
    report, wal = result.report, result.wal
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
    # one write: a year of hourly snapshots forgotten at once is thousands of lines, and
    # rich took 50 us to print each one
    lines = [f"{verb} {s.short_id} {s.asset} {s.time:%Y-%m-%d %H:%M}" for s in report.removed]
    lines += [f"kept {s.short_id} {s.asset}: protected by Object Lock" for s in report.locked]
    if lines:
        console.out("\n".join(lines), highlight=False)
    console.print(
        f"{len(report.kept)} kept, {len(report.removed)} {'to forget' if dry_run else 'forgotten'}, "
        f"{len(report.locked)} locked"
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
    repack_small: bool = typer.Option(
        False, "--repack-small", help="Repack small packs even when there are fewer than 10."
    ),
    max_unused: str = typer.Option(
        "5%", "--max-unused", help="Unused space left in kept packs before they are repacked, or 'unlimited'."
    ),
    recovery_key: RecoveryKeyOption = None,
    share: ShareOption = None,
    passphrase_file: PassphraseOption = None,
) -> None:
    """Remove data no snapshot or WAL segment needs and repack small or mostly unused packs
    (exclusive lock; honours Object Lock)."""
    from lifeboat.repo.repack import RepackOptions, parse_max_unused

    options = RepackOptions(repack_small=repack_small, max_unused=parse_max_unused(max_unused))
    report = retention.prune(
        run_context(ctx).policy(),
        credentials_options(recovery_key, share, passphrase_file),
        dry_run=dry_run,
        repack=options,
    )
    if json_out:
        print_json({**report.__dict__, "dry_run": dry_run})
        return
    verb, repack_verb = ("would remove", "would repack") if dry_run else ("removed", "repacked")
    console.print(
        f"{verb} {report.packs_removed} of {report.packs_total} packs ({human_bytes(report.bytes_removed)}); "
        f"{report.packs_kept_locked} kept by Object Lock"
        + (f"; {repack_verb} {report.packs_repacked}" if report.packs_repacked else "")
        + (
            f"; {len(report.repack_kept_locked)} small or mostly unused packs left under retention"
            if report.repack_kept_locked
            else ""
        )
        + (
            f"; {report.incomplete_removed} leftovers of killed writes swept"
            if report.incomplete_removed
            else ""
        )
    )
