"""A drill from start to evidence: restore, measure, judge, sign, record, clean up."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from lifeboat import runtime
from lifeboat.crypto.signing import load_or_create, public_hex
from lifeboat.drills.actions import Ledger
from lifeboat.drills.evidence import write_bundle
from lifeboat.drills.report import render
from lifeboat.drills.runner import DrillRun, DrillRunner, Log
from lifeboat.errors import ConfigError, NotFoundError


def ledger_for(policy: Any) -> Ledger:
    return Ledger(policy.base_dir / "docs" / "operations" / "corrective-actions.json")


def reason_asset(reason: str, run: DrillRun) -> str | None:
    """The asset a failure reason is about: "ASSET: ..." or "check failed: ASSET name: ..."."""
    head = reason.removeprefix("check failed: ")
    candidate = head.split(":")[0].split(" ")[0]
    return candidate if candidate in run.targets else None


def action_period(policy: Any, source: str, asset: str | None) -> timedelta:
    """How long a corrective action may stay open: the asset's class drill period, else
    the drill's own period; the next drill is where the fix has to show."""
    if asset and asset in policy.assets:
        period: timedelta = policy.classes[policy.asset(asset).class_].drill_every
        return period
    drill = policy.drills.get(source.removeprefix("drill "))
    return drill.every if drill else timedelta(days=30)


def drill_key(policy: Any, repo: Any) -> Any:
    key = load_or_create(policy.state_dir / "drill-signing.key")
    name = "drill-key.json"
    try:
        recorded = repo.get_record(name)
    except NotFoundError:
        repo.put_record(name, {"public_key": public_hex(key)})
        recorded = {"public_key": public_hex(key)}
    if recorded.get("public_key") != public_hex(key):
        raise ConfigError("this host's drill signing key differs from the one recorded in the repository")
    return key


def run_drill(
    policy: Any,
    name: str,
    creds: runtime.Credentials,
    *,
    keep: bool = False,
    evidence_dir: Path | None = None,
    at: datetime | None = None,
    log: Log = lambda _: None,
) -> tuple[DrillRun, Path]:
    if name not in policy.drills:
        known = ", ".join(sorted(policy.drills)) or "none"
        raise ConfigError(f"unknown drill {name!r} (known: {known})")
    drill = policy.drills[name]
    if drill.repository is not None:
        # the whole drill reads from the copy: the proof that the copy alone restores
        policy = policy.reading_from(drill.repository)
        log(f"reading from copy {drill.repository!r} ({policy.repository.url})")
    if not creds.shares and drill.shares:
        creds = dataclasses.replace(creds, shares=tuple(drill.shares))
    needs_keys = drill.scenario in ("keys-recovery", "full-outage") and any(
        policy.asset(a).kind == "keys" for a in (drill.assets or policy.assets)
    )
    keys_asset = next((a for a in (drill.assets or policy.assets) if policy.asset(a).kind == "keys"), None)
    repo = runtime.open_for_read(
        policy, creds, purpose=f"drill {name}", asset=keys_asset if needs_keys else None
    )
    runner = DrillRunner(policy, name, repo, at=at, log=log)
    runner.run.repository = drill.repository
    try:
        run = runner.execute()
    finally:
        runner.cleanup(keep)
    out_root = evidence_dir or drill.evidence_dir
    bundle = Path(out_root) / f"{run.started[:10]}-{name}"
    suffix = 1
    while bundle.exists():
        suffix += 1
        bundle = Path(out_root) / f"{run.started[:10]}-{name}-{suffix}"
    data = asdict(run)
    logs = data.pop("logs")
    md, html = render(data)
    write_bundle(bundle, data, logs, md, html, drill_key(policy, repo))
    if run.verdict != "pass":
        ledger = ledger_for(policy)
        for reason in run.reasons:
            asset = reason_asset(reason, run)
            ledger.open(
                reason.split(":")[0] + ": " + reason.split(":", 1)[-1].strip()[:120],
                reason,
                str(bundle),
                source=f"drill {name}",
                asset=asset,
                due_in=action_period(policy, f"drill {name}", asset),
            )
    runtime.audit_log(policy, repo).append(
        "drill",
        outcome=run.verdict,
        drill=name,
        scenario=run.scenario,
        bundle=str(bundle),
        rto_s=run.total_rto_s,
    )
    return run, bundle
