"""Can the configured setup meet its RPO/RTO targets? Pure checks over the policy."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from croniter import croniter

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


def transport_findings(policy: Policy) -> list[Finding]:
    """Plain-http endpoints the policy allows explicitly: said every time the policy is checked."""
    sections: list[tuple[str, str | None, bool]] = [
        ("repository", policy.repository.endpoint_url, policy.repository.allow_insecure_http)
    ]
    sections += [
        (name, asset.endpoint_url, asset.allow_insecure_http)
        for name, asset in policy.assets.items()
        if asset.kind == "objects"
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
    findings: list[Finding] = transport_findings(policy)
    for name, asset in policy.assets.items():
        cls = policy.classes[asset.class_]
        if asset.kind == "postgres":
            if cls.rpo < timedelta(minutes=1) and not asset.stream:
                findings.append(
                    Finding(
                        name,
                        "warn",
                        f"RPO {format_duration(cls.rpo)} needs WAL streaming "
                        "(stream = true); archive_command alone ships whole segments",
                    )
                )
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
