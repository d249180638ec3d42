"""`lifeboat policy init`: a starter policy from what is detected here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.prompt import Prompt

from lifeboat.cli.common import console, run_context
from lifeboat.cli.policy_cmd import policy_app
from lifeboat.errors import ConfigError


@policy_app.command("init")
def init(
    ctx: typer.Context,
    postgres: str | None = typer.Option(
        None, "--postgres", help="The cluster to protect: a connection string or its PGDATA."
    ),
    bucket: str | None = typer.Option(
        None, "--bucket", help="The repository's bucket: s3://bucket or s3://bucket/prefix."
    ),
    endpoint_url: str | None = typer.Option(None, "--endpoint-url", help="S3 endpoint (MinIO, Ceph, ...)."),
    keys: Path | None = typer.Option(None, "--keys", help="A directory of key material to protect."),
    mode: str | None = typer.Option(None, "--mode", help="production, staging or development."),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write it (default: --config, ./lifeboat.toml)."
    ),
) -> None:
    """Write a commented policy that `policy check` accepts, detecting the cluster's PGDATA and
    archive settings and the bucket's versioning and Object Lock; never overwrites a file."""
    from lifeboat.ops import policy_init as pi

    path = out or run_context(ctx).config_path
    if path.exists():
        raise ConfigError(f"{path} already exists: not overwriting it", hint="pass --out NEW_FILE")
    if sys.stdin.isatty():  # ask only for what was not given, and only a person at a terminal
        postgres, bucket, keys, mode = _ask(postgres, bucket, keys, mode)
    mode = mode or "production"
    if mode not in pi.MODES:
        raise ConfigError(f"--mode {mode!r}: expected one of {', '.join(pi.MODES)}")
    starter = pi.Starter(mode=mode, keys=keys.absolute() if keys else None)
    if postgres:
        starter.postgres = pi.detect_postgres(postgres)
    if bucket:
        # boto3 reads these too; written into the policy, the daemon and units need no env
        endpoint_url = (
            endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        starter.bucket = pi.detect_bucket(bucket, endpoint_url)
    pi.write_new(path, pi.render(starter))
    _say(f"wrote {path}")
    _report(starter)
    _say("next:")
    for command in pi.next_commands(path, starter):
        _say(f"  {command}")


def _ask(
    postgres: str | None, bucket: str | None, keys: Path | None, mode: str | None
) -> tuple[str | None, str | None, Path | None, str | None]:
    if postgres is None:
        postgres = _question("PostgreSQL to protect (connection string or PGDATA, empty: none)")
    if bucket is None:
        bucket = _question("repository bucket (s3://..., empty: a local directory)")
    if keys is None:
        answer = _question("directory of key material to protect (empty: none)")
        keys = Path(answer) if answer else None
    if mode is None:
        mode = Prompt.ask("mode", choices=["production", "staging", "development"], default="production")
    return postgres or None, bucket or None, keys, mode


def _report(starter: object) -> None:
    from lifeboat.ops.policy_init import Starter

    assert isinstance(starter, Starter)
    if starter.postgres is not None:
        pg = starter.postgres
        _say(f"  postgres: PGDATA {pg.pgdata or 'unknown'}, dsn {pg.dsn}")
        for note in pg.notes:
            _say(f"    note: {note}")
    if starter.bucket is not None:
        b = starter.bucket
        lock = f"Object Lock on ({b.lock_days} days)" if b.object_lock else "no Object Lock"
        _say(f"  repository: {b.url}, versioning {b.versioning}, {lock}")
        for note in b.notes:
            _say(f"    note: {note}")
    if starter.keys is not None:
        _say(f"  keys: {starter.keys}")


def _say(text: str) -> None:
    """Paths and commands to copy: never broken over lines, never read as markup."""
    console.print(text, markup=False, soft_wrap=True)


def _question(text: str) -> str:
    return Prompt.ask(text, default="", show_default=False)
