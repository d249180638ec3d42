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
    from lifeboat.cli.policy_slice import PolicySlice, WalAsset
    from lifeboat.repo import Repository
    from lifeboat.runtime import Settings


def _system_identifier(policy: Settings, repo: Repository, asset: str) -> int | None:
    """The asset's system identifier, cached in the state dir once a base backup recorded
    it (push runs once per segment: no listing of snapshots each time)."""
    from lifeboat.assets.postgres.wal import asset_system_identifier
    from lifeboat.errors import ConfigError
    from lifeboat.private import write_private

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
            write_private(cache, repo.cache_seal.seal(tag_name, f"{found}\n".encode()))
        except (OSError, ConfigError):  # a state dir this user may not write: the next push looks it up again
            pass
    return found


def push(settings: PolicySlice, asset: WalAsset, path: Path, async_: bool) -> None:
    """Archive one WAL file: durable in the repository, or spooled for a forked drainer."""
    from lifeboat import runtime
    from lifeboat.assets.postgres.wal import drain_spool, push_segment, spool_segment

    name = asset.name
    if async_ or asset.wal_async:
        spool = settings.state_dir / "wal-spool" / name
        spool_segment(spool, path, name, runtime.local_seal(settings))
        if _forked():  # the drainer outlives archive_command; one at a time (flock)
            try:
                os.setsid()
                drain_spool(runtime.open_for_write(settings), name, spool)
            finally:
                os._exit(0)
        return
    repo = runtime.open_for_write(settings)
    ref = push_segment(repo, name, path, _system_identifier(settings, repo, name))
    extra = {"squatters": "; ".join(ref.squatters)} if ref.squatters else {}
    audit = runtime.audit_log(settings, repo)
    audit.append("wal-push", asset=name, segment=path.name, size=ref.size, **extra)
    for squatter in ref.squatters:  # archived all the same; the squatter is named
        sys.stderr.write(f"lifeboat: warning: {path.name} archived beside a squatter: {squatter}\n")
    spool = settings.state_dir / "wal-spool" / name
    if _holds_spooled(spool) and _forked():  # spooled while wal_async was on: acknowledged
        try:  # to PostgreSQL, gone from pg_wal, and no daemon drains it any more
            os.setsid()
            drain_spool(runtime.open_for_write(settings), name, spool)
        finally:
            os._exit(0)


def _holds_spooled(spool: Path) -> bool:
    """Whether the WAL spool holds a file not yet archived (one system call when it is absent)."""
    try:
        with os.scandir(spool) as entries:
            return any(not entry.name.startswith(".") for entry in entries)
    except OSError:
        return False


# restore_command's exit on anything but "the archive lacks it" (1): PostgreSQL takes any
# exit up to 125 for the end of the archive, and an archive recovery would promote early at
# a segment a failed read, an unreachable store or a pruned pack kept from it; above 125 it
# stops with FATAL instead (as a restore's own spool script does)
FETCH_FAILED = 200


def fetch_failure_code() -> int:
    """The exit of a fetch that failed. A standby (standby.signal in the data directory,
    restore_command's working directory) never promotes on its own: it retries, and
    streams meanwhile, so a store's brief outage gets 1 there rather than a FATAL stop of
    the standby; an archive recovery gets FETCH_FAILED."""
    return 1 if os.path.exists("standby.signal") else FETCH_FAILED


def fetch(
    load_settings: Callable[[], tuple[PolicySlice, WalAsset]],
    name: str,
    dest: Path,
    spool: Path | None,
    recovery_key: Path | None,
) -> int:
    """Restore one WAL file; 1 (quietly) when the archive lacks it, as restore_command wants.
    The policy is read only past the spool, which needs none."""
    if spool is not None:
        import shutil

        if not (spool / name).exists():
            return 1
        shutil.copyfile(spool / name, dest)
        return 0
    from lifeboat import runtime
    from lifeboat.assets.postgres.wal import fetch_segment, prefetch
    from lifeboat.crypto.credentials import Credentials

    settings, asset = load_settings()
    asset_name = asset.name
    creds = Credentials(recovery_key=recovery_key)
    repo = runtime.open_for_read(settings, creds, purpose="wal fetch", asset=asset_name)
    cache = settings.state_dir / "wal-prefetch" / asset_name
    if not fetch_segment(repo, asset_name, name, dest, cache):
        return 1
    if _forked():  # prefetch the next segments after PostgreSQL has this one
        try:
            prefetch(repo, asset_name, name, cache)
        finally:
            os._exit(0)
    return 0


def _forked() -> bool:
    """True in a child forked to go on in the background. One that cannot be forked (a pids
    limit: EAGAIN) is no failure: the segment is already archived (spooled, for the next
    push's drainer) or restored, and saying otherwise would have PostgreSQL retry the push
    for ever, or end recovery early at a segment it was given."""
    try:
        return os.fork() == 0
    except OSError:
        return False
