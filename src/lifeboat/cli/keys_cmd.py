"""`lifeboat keys rotate`: a new backup key; the old one stops adding data."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import console, print_json, run_context

keys_app = typer.Typer(help="Repository keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def rotate(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Write a new backup key, retire the old one; snapshots written before stay restorable."""
    from lifeboat import runtime
    from lifeboat.crypto.keys import load_backup_key, new_backup_key

    policy = run_context(ctx).policy()
    keyfile = Path(policy.repository.keyfile)
    old = load_backup_key(keyfile)
    repo = runtime.open_for_write(policy)
    repo.ensure_writable()
    new = new_backup_key(old.repo_id, old.recovery_public, old.id_key)
    repo.put_record(
        f"keys/{new.key_id}.json",
        {"key_id": new.key_id, "created": new.created, "status": "active", "replaces": old.key_id},
    )
    retired = keyfile.with_name(f"{keyfile.name}.retired-{time.strftime('%Y%m%dT%H%M%S')}")
    keyfile.rename(retired)
    new.save(keyfile)
    repo.put_record(
        f"keys/{old.key_id}.retired.json",
        {"key_id": old.key_id, "retired_by": new.key_id, "time": new.created},
    )
    runtime.audit_log(policy, repo).append("keys-rotate", old_key_id=old.key_id, new_key_id=new.key_id)
    if json_out:
        print_json({"old_key_id": old.key_id, "new_key_id": new.key_id, "keyfile": str(keyfile)})
        return
    console.print(
        f"backup key rotated: {old.key_id} -> {new.key_id} ({keyfile}); the old key can no longer add data"
    )
