"""What `wal push` and `wal fetch` do, without typer or rich: PostgreSQL runs them once per
WAL segment, so `cli/entry.py` calls these directly and `cli/wal_cmd.py` wraps them as
commands (one behaviour whichever way they start)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lifeboat.assets.postgres.model import PostgresAsset
    from lifeboat.policy import Policy
    from lifeboat.repo import Repository


def postgres_spec(policy: Policy, name: str) -> PostgresAsset:
    """A PostgreSQL asset's policy section (ConfigError for an asset of another kind)."""
    from lifeboat.assets.postgres.model import PostgresAsset
    from lifeboat.errors import ConfigError

    spec = policy.asset(name)
    if not isinstance(spec, PostgresAsset):
        raise ConfigError(f"{name!r} is not a postgres asset")
    return spec


def postgres_asset(policy: Policy, asset: str | None) -> str:
    """The asset named by --asset, or the only PostgreSQL asset of the policy."""
    from lifeboat.assets.registry import assets_with, kind_of
    from lifeboat.errors import ConfigError

    spec = policy.assets.get(asset) if asset else None
    if spec is not None and kind_of(spec).archives_wal:
        return str(asset)  # archive_command names its asset: other kinds' plug-ins stay unloaded
    names = assets_with(policy, lambda kind, _: kind.archives_wal)
    if asset:
        if asset not in names:
            raise ConfigError(
                f"{asset!r} is not a postgres asset (postgres assets: {', '.join(names) or 'none'})"
            )
        return asset
    if len(names) != 1:
        raise ConfigError("several postgres assets: name one with --asset", hint=f"known: {', '.join(names)}")
    return str(names[0])


def _system_identifier(policy: Policy, repo: Repository, asset: str) -> int | None:
    """The asset's system identifier, cached in the state dir once a base backup recorded
    it (push runs once per segment: no listing of snapshots each time)."""
    from lifeboat.assets.postgres.wal import asset_system_identifier

    cache = policy.state_dir / "wal-sysid" / asset
    tag_name = f"wal-sysid/{asset}"  # tagged: a number planted there would refuse every segment
    try:
        cached = repo.cache_seal.open(tag_name, cache.read_bytes())
        if cached is not None:
            return int(cached.strip())
    except (OSError, ValueError):
        pass
    found = asset_system_identifier(repo, asset)
    if found is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(repo.cache_seal.seal(tag_name, f"{found}\n".encode()))
        except OSError:  # a state dir this user may not write: the next push looks it up again
            pass
    return found


def push(policy: Policy, path: Path, asset: str | None, async_: bool) -> None:
    """Archive one WAL file: durable in the repository, or spooled for a forked drainer."""
    from lifeboat import runtime
    from lifeboat.assets.postgres.wal import drain_spool, push_segment, spool_segment

    name = postgres_asset(policy, asset)
    if async_ or postgres_spec(policy, name).wal_async:
        spool = policy.state_dir / "wal-spool" / name
        spool_segment(spool, path, name, runtime.local_seal(policy))
        if os.fork() == 0:  # the drainer outlives archive_command; one at a time (flock)
            try:
                os.setsid()
                drain_spool(runtime.open_for_write(policy), name, spool)
            finally:
                os._exit(0)
        return
    repo = runtime.open_for_write(policy)
    ref = push_segment(repo, name, path, _system_identifier(policy, repo, name))
    extra = {"squatters": "; ".join(ref.squatters)} if ref.squatters else {}
    runtime.audit_log(policy, repo).append("wal-push", asset=name, segment=path.name, size=ref.size, **extra)
    for squatter in ref.squatters:  # archived all the same; the squatter is named
        sys.stderr.write(f"lifeboat: warning: {path.name} archived beside a squatter: {squatter}\n")


def fetch(
    load_policy: Callable[[], Policy],
    name: str,
    dest: Path,
    asset: str | None,
    spool: Path | None,
    recovery_key: Path | None,
) -> int:
    """Restore one WAL file; 1 (quietly) when the archive lacks it, as restore_command wants."""
    if spool is not None:
        import shutil

        if not (spool / name).exists():
            return 1
        shutil.copyfile(spool / name, dest)
        return 0
    from lifeboat import runtime
    from lifeboat.assets.postgres.wal import fetch_segment, prefetch
    from lifeboat.crypto.credentials import Credentials

    policy = load_policy()
    asset_name = postgres_asset(policy, asset)
    creds = Credentials(recovery_key=recovery_key)
    repo = runtime.open_for_read(policy, creds, purpose="wal fetch", asset=asset_name)
    cache = policy.state_dir / "wal-prefetch" / asset_name
    if not fetch_segment(repo, asset_name, name, dest, cache):
        return 1
    if os.fork() == 0:  # prefetch the next segments after PostgreSQL has this one
        try:
            prefetch(repo, asset_name, name, cache)
        finally:
            os._exit(0)
    return 0
