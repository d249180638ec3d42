"""The demo script: build the sandbox, back it up, break it, run the full-outage drill
from the repository and two custodians' shares alone, and collect the figures."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifeboat.assets.registry import load_policy
from lifeboat.crypto.credentials import Credentials
from lifeboat.crypto.escrow import split_recovery_key
from lifeboat.crypto.escrow_key import PendingEscrow
from lifeboat.drills.evidence import verify_bundle
from lifeboat.drills.runner import DrillRun
from lifeboat.errors import CheckFailed
from lifeboat.ops.init import publish_drill_key
from lifeboat.policy import Policy
from lifeboat.repo import Repository
from lifeboat.repo.escrow import put_signed_escrow_record
from lifeboat.repo.model import SnapshotInfo
from lifeboat.runtime import cache_dir, storage_for
from lifeboat.sandbox.platform import Step, build, outage, traffic
from lifeboat.services.backup import backup
from lifeboat.services.drills import run_drill


@dataclass
class DemoResult:
    root: Path
    policy: Path
    backups: dict[str, dict[str, Any]] = field(default_factory=dict)
    damage: dict[str, int] = field(default_factory=dict)
    drill: DrillRun | None = None
    bundle: Path | None = None
    bundle_ok: bool = False
    dashboard: Path | None = None
    seconds: float = 0.0


def prepare_directory(root: Path) -> None:
    """A fresh sandbox; as root, owned by `postgres` and then run as `postgres`, because
    PostgreSQL refuses root and its archive_command must write into the repository."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam("postgres")
    os.chown(root, entry.pw_uid, entry.pw_gid)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ.update(HOME=str(root), USER="postgres", LOGNAME="postgres")


def start_s3() -> tuple[Any, str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "sandbox")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "sandbox")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def run_demo(root: Path, step: Step, traffic_seconds: float = 8.0) -> DemoResult:
    started = time.monotonic()
    root = root.resolve()
    prepare_directory(root)
    server, endpoint = start_s3()
    try:
        platform = build(root, endpoint, step)
        policy = load_policy(platform.policy)
        result = DemoResult(root, platform.policy)
        step(
            "lifeboat init: repository, write-only backup key, recovery key split 2-of-3 (alice, bob, carol)"
        )
        # platform-keys is key material: sealed to an escrow key whose shares go into the
        # custodians' files next to their recovery-key shares, as `lifeboat init` does
        escrow = PendingEscrow(policy.escrow_threshold(), list(policy.escrow.custodians))
        repo, backup_key, recovery = Repository.create(
            storage_for(policy), cache_dir=cache_dir(policy), escrow_key=escrow.bind
        )
        backup_key.save(policy.repository.keyfile)
        split_recovery_key(policy, repo, recovery, root / "shares", key_material=escrow.shares)
        if escrow.public is not None:
            put_signed_escrow_record(repo, escrow.public, recovery)
        step(f"drill evidence signing key: {publish_drill_key(repo, recovery)} (auditors pin it)")
        del recovery  # from here on, only the custodians' shares can read the repository
        step(f"lifeboat policy check: {check_policy(platform.policy)}")
        for name in ("maindb", "media", "platform-keys"):
            step(f"backup {name}")
            info = backed_up(policy, name)
            result.backups[name] = {
                "snapshot": info.short_id,
                "bytes": info.stats.bytes,
                "stored": info.stats.stored_bytes,
                "seconds": info.stats.seconds,
            }
        traffic(platform, traffic_seconds, step)
        step("backup media again; PostgreSQL keeps archiving WAL continuously")
        backed_up(policy, "media")
        _switch_and_wait_archived(platform)
        result.damage = outage(platform, step)
        step("full-outage drill: restore everything into staging from the repository and 2 shares")
        creds = Credentials(shares=(root / "shares" / "alice.share", root / "shares" / "bob.share"))
        result.drill, result.bundle = run_drill(policy, "full-outage", creds, log=step)
        result.bundle_ok = verify_bundle(result.bundle, result.drill.signing_key).ok
        step("rendering the dashboard")
        from lifeboat.ops.dashboard import build_dashboard

        result.dashboard = build_dashboard(policy, root / "dashboard")
        result.seconds = time.monotonic() - started
        return result
    finally:
        server.stop()


def backed_up(policy: Policy, name: str) -> SnapshotInfo:
    """One asset backed up through the backup service, as `lifeboat backup NAME` does."""
    [outcome] = backup(policy, [name]).assets
    if outcome.failure is not None or outcome.snapshot is None:
        raise outcome.failure.error() if outcome.failure else CheckFailed(f"backup of {name} failed")
    return outcome.snapshot


def check_policy(path: Path) -> str:
    """Run `lifeboat policy check` (online: live server settings, bucket, repository) as an
    operator would; the sandbox models a policy to copy, so it must pass its own checks."""
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "lifeboat", "--config", str(path), "policy", "check", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        raise CheckFailed(f"policy check of the sandbox failed: {proc.stderr.strip()}") from None
    # The sandbox's S3 endpoint is a server on 127.0.0.1 that it started itself and its
    # repository is a local directory, so the notes about plain http and about a filesystem
    # repository (which a real policy must heed) are the findings it may carry.
    problems = [
        f"{f['level']}: {f['asset']}: {f['message']}"
        for f in report["findings"]
        if not _sandbox_note(f["message"])
    ]
    if proc.returncode != 0 or problems:
        raise CheckFailed(f"the sandbox policy does not pass its own check: {'; '.join(problems)}")
    noted = any(_sandbox_note(f["message"]) for f in report["findings"])
    return f"exit 0, {len(report['assets'])} assets ok, no warnings" + (
        " (beyond the notes on the sandbox's loopback http endpoint and local repository)" if noted else ""
    )


def _switch_and_wait_archived(platform: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    target = platform.sql("select pg_walfile_name(pg_current_wal_lsn())")[0][0]
    platform.sql("select pg_switch_wal()")
    while time.monotonic() < deadline:
        last = platform.sql("select last_archived_wal from pg_stat_archiver")[0][0]
        if last and last >= target:
            return
        time.sleep(0.2)


def _sandbox_note(message: str) -> bool:
    loopback_http = message.startswith(("endpoint http://127.0.0.1:", "endpoint http://localhost:"))
    local_repository = "is a filesystem repository" in message and "not immutable" in message
    return (loopback_http and "allow_insecure_http = true" in message) or local_repository
