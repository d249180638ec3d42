"""Can the configured setup meet its RPO/RTO targets? Pure checks over the policy."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from croniter import croniter

from lifeboat.assets.registry import kind_of
from lifeboat.policy import Policy, format_duration


@dataclass(frozen=True)
class Finding:
    asset: str
    level: Literal["ok", "warn", "error"]
    message: str


def schedule_interval(schedule: str) -> timedelta:
    """The longest gap between two runs over the next week of the cron schedule."""
    it = croniter(schedule, datetime(2026, 1, 5, tzinfo=UTC), second_at_beginning=len(schedule.split()) == 6)
    times = [it.get_next(datetime) for _ in range(64)]
    return max(b - a for a, b in itertools.pairwise(times))


def _level(policy: Policy) -> Literal["warn", "error"]:
    """Errors in production, warnings elsewhere (a policy is often written before the
    hosts and buckets it describes exist)."""
    return "error" if policy.deployment.mode == "production" else "warn"


def path_findings(policy: Policy) -> list[Finding]:
    """Asset paths that do not exist and a PGDATA that cannot be read: a backup of them
    would fail or, worse, back up nothing."""
    level = _level(policy)
    findings = []
    for name, asset in policy.assets.items():
        for path, problem in asset.local_paths():
            if not _exists(path):
                findings.append(Finding(name, level, problem))
    return findings


def _exists(path: Path) -> bool:
    try:
        path.lstat()
    except OSError:  # absent, or a parent we may not traverse: unreachable either way
        return False
    return True


def immutability_findings(policy: Policy) -> list[Finding]:
    """A file:// repository is append-only by lifeboat's own rules (files written once, made
    read-only), not against the host's own user: root or the owner can chmod and delete.
    Production deserves storage the backup host cannot rewrite (S3 Object Lock)."""
    url = str(policy.repository.url)
    if url.startswith("s3://"):
        if policy.deployment.mode == "production" and not policy.repository.lock_days:
            return [
                Finding(
                    "repository",
                    "warn",
                    "no lock_days: a compromised backup host with these credentials could delete "
                    "backups; set lock_days on an Object Lock bucket",
                )
            ]
        return []
    if policy.deployment.mode != "production":
        return []
    return [
        Finding(
            "repository",
            "warn",
            f"{url} is a filesystem repository: read-only files, but not immutable against this "
            "host's own root or owner (rm, chmod); production should use S3 with Object Lock (lock_days)",
        )
    ]


def transport_findings(policy: Policy) -> list[Finding]:
    """Plain-http endpoints the policy allows explicitly: said every time the policy is checked."""
    sections: list[tuple[str, str | None, bool]] = [
        ("repository", policy.repository.endpoint_url, policy.repository.allow_insecure_http)
    ]
    for name, asset in policy.assets.items():
        endpoint = kind_of(asset).endpoint(asset)
        if endpoint is not None:
            sections.append((name, *endpoint))
    sections += [
        (f"copies.{name}", c.endpoint_url, c.allow_insecure_http) for name, c in policy.copies.items()
    ]
    return [
        Finding(
            name,
            "warn",
            f"endpoint {url.split('?')[0]} is plain http (allow_insecure_http = true): "
            "requests and data travel unencrypted; use https:// outside a test bench",
        )
        for name, url, allowed in sections
        if allowed and url and url.lower().startswith("http://")
    ]


def feasibility(policy: Policy) -> list[Finding]:
    findings: list[Finding] = path_findings(policy) + transport_findings(policy)
    findings += immutability_findings(policy)
    for name, asset in policy.assets.items():
        cls = policy.classes[asset.class_]
        own = kind_of(asset).feasibility(policy, name, asset)
        if own is not None:
            findings += [Finding(name, note.level, note.message) for note in own]
        elif asset.schedule is None:
            findings.append(Finding(name, "warn", "no schedule: backups only run when started by hand"))
        else:
            gap = schedule_interval(asset.schedule)
            if gap > cls.rpo:
                findings.append(
                    Finding(
                        name,
                        "error",
                        f"schedule runs every {format_duration(gap)} but the "
                        f"RPO is {format_duration(cls.rpo)}: the target cannot be met",
                    )
                )
        if (
            asset.window is not None
            and asset.schedule is not None
            and asset.window.length() < timedelta(hours=1)
        ):
            findings.append(Finding(name, "warn", f"window {asset.window} is shorter than an hour"))
        if cls.drill_every > timedelta(days=31):
            findings.append(
                Finding(
                    name,
                    "warn",
                    f"drills every {format_duration(cls.drill_every)}: "
                    "recoverability is proven less than monthly",
                )
            )
    return findings


def reachability_findings(policy: Policy) -> list[Finding]:
    """The repository and the buckets objects assets back up, seen from here (online only)."""
    from lifeboat import runtime
    from lifeboat.errors import LifeboatError
    from lifeboat.repo.format import CONFIG_NAME

    level = _level(policy)
    findings = []
    url = policy.repository.url
    try:
        storage = runtime.storage_for(policy)
        # a missing bucket answers a HEAD like a missing object: a listing tells them apart
        if not storage.exists(CONFIG_NAME) and not any(storage.list(CONFIG_NAME)):
            findings.append(Finding("repository", "warn", f"no repository at {url} yet: run 'lifeboat init'"))
    except LifeboatError as exc:
        findings.append(Finding("repository", level, f"cannot reach {url}: {exc.message}"))
    for name, asset in policy.assets.items():
        problem = kind_of(asset).reachable(asset)
        if problem is not None:
            findings.append(Finding(name, level, problem))
    return findings
