"""`lifeboat repo iam-policy`: least-privilege AWS policies for a repository on S3."""

from __future__ import annotations

from urllib.parse import urlparse

import typer

from lifeboat.cli.app import app
from lifeboat.cli.common import print_json, run_context
from lifeboat.errors import ConfigError

repo_app = typer.Typer(help="Repository administration.", no_args_is_help=True)
app.add_typer(repo_app, name="repo")


def _location(ctx: typer.Context, bucket: str | None, prefix: str | None) -> tuple[str, str]:
    """--bucket/--prefix, else the policy's s3:// repository url."""
    if bucket:
        return bucket, prefix or ""
    url = run_context(ctx).policy().repository.url
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigError(
            f"repository {url} is not on S3", hint="pass --bucket (and --prefix) for an S3 repository"
        )
    return parsed.netloc, prefix if prefix is not None else parsed.path.strip("/")


@repo_app.command("iam-policy")
def iam_policy(
    ctx: typer.Context,
    role: str = typer.Option("backup", "--role", help="backup, restore or admin."),
    bucket: str = typer.Option(None, "--bucket", help="Bucket (default: from [repository] url)."),
    prefix: str = typer.Option(None, "--prefix", help="Key prefix (default: from [repository] url)."),
    bucket_policy: bool = typer.Option(
        False, "--bucket-policy", help="Print the bucket policy (conditional writes required) instead."
    ),
) -> None:
    """Print an AWS IAM policy (JSON) for a role, or the repository's bucket policy."""
    from lifeboat.storage import iam

    name, key_prefix = _location(ctx, bucket, prefix)
    if bucket_policy:
        print_json(iam.bucket_policy(name, key_prefix))
    else:
        print_json(iam.iam_policy(role, name, key_prefix))
