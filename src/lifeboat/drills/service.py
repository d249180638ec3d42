"""A drill from start to evidence: restore, measure, judge, sign, record, clean up."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifeboat.assets.registry import kind_of
from lifeboat.audit import read_log
from lifeboat.drills.actions import Ledger, ledger_at, open_period
from lifeboat.drills.evidence import reserve_bundle, write_bundle
from lifeboat.drills.report import render
from lifeboat.drills.runner import DrillRun, DrillRunner, Log, Restore, drilled_assets
from lifeboat.errors import ConfigError, LifeboatError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from lifeboat.policy import Policy
    from lifeboat.repo import Repository


def ledger_for(policy: Policy) -> Ledger:
    """The corrective-action ledger drills and status share."""
    return ledger_at(policy.base_dir)


def reason_asset(reason: str, run: DrillRun) -> str | None:
    """The asset a failure reason is about: "ASSET: ..." or "check failed: ASSET name: ..."."""
    head = reason.removeprefix("check failed: ")
    candidate = head.split(":")[0].split(" ")[0]
    return candidate if candidate in run.targets else None


def action_period(policy: Policy, source: str, asset: str | None) -> timedelta:
    """How long a corrective action may stay open (``actions.open_period``)."""
    spec = policy.assets.get(asset) if asset else None
    class_period = policy.classes[spec.class_].drill_every if spec else None
    drill = policy.drills.get(source.removeprefix("drill "))
    return open_period(class_period, drill.every if drill else None)


def drill_policy(policy: Policy, name: str) -> Policy:
    """The policy a drill reads with: the drill's copy of the repository when it names one."""
    if name not in policy.drills:
        known = ", ".join(sorted(policy.drills)) or "none"
        raise ConfigError(f"unknown drill {name!r} (known: {known})")
    drill = policy.drills[name]
    # the whole drill reads from the copy: the proof that the copy alone restores
    return policy.reading_from(drill.repository) if drill.repository is not None else policy


def escrowed_asset(policy: Policy, name: str) -> str | None:
    """The drill's first asset whose restore needs the escrow threshold (key material), if
    the drill's scenario restores it; opening the repository for it asks for the shares."""
    drilled = drilled_assets(policy, policy.drills[name])
    return next((a for a in drilled if kind_of(policy.asset(a)).needs_escrow), None)


def run_steps(
    policy: Policy,
    name: str,
    repo: Repository,
    restore: Restore,
    *,
    keep: bool = False,
    at: datetime | None = None,
    log: Log = lambda _: None,
) -> DrillRun:
    """Restore, verify, measure and judge; a drill that stops on an error comes back failed
    with the reason (never raised), so it is signed and recorded like any other."""
    drill = policy.drills[name]
    runner = DrillRunner(policy, name, repo, restore, at=at, log=log)
    runner.run.repository = drill.repository
    try:
        return runner.execute()
    finally:
        runner.cleanup(keep)


def bundle_dir(policy: Policy, name: str, run: DrillRun, evidence_dir: Path | None = None) -> Path:
    """Where the drill's evidence goes: a new directory, never an earlier drill's, made
    empty now (write_bundle renames the signed bundle onto it)."""
    # absolute: the audit log names it, and status reads it from wherever it runs
    out_root = Path(evidence_dir or policy.drills[name].evidence_dir).absolute()
    return reserve_bundle(out_root, f"{run.started[:10]}-{name}")


def audit_mark(path: Path) -> int:
    """The sequence number of the audit log's last entry (-1: none yet)."""
    entries = _entries(path)
    return int(entries[-1].get("seq", -1)) if entries else -1


def _entries(path: Path) -> list[dict[str, Any]]:
    try:
        lines = read_log(path).splitlines()
    except (OSError, LifeboatError):
        return []
    found = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            found.append(entry)
    return found


def drill_audit(path: Path, after_seq: int) -> tuple[list[str], dict[str, Any]]:
    """This process's audit entries since ``after_seq`` (their ids, as mirrored into the
    repository) and how the recovery key was opened: custodians' names or the key file."""
    ids: list[str] = []
    custodians: list[str] = []
    via = None
    for entry in _entries(path):
        if int(entry.get("seq", -1)) <= after_seq or entry.get("pid") != os.getpid():
            continue
        ids.append(f"{int(entry['seq']):012d}-{str(entry.get('hash', ''))[:16]}")
        details = entry.get("details") or {}
        if entry.get("operation") == "key-access" and entry.get("outcome") == "ok":
            custodian = str(details.get("custodian") or "")
            if custodian:  # named once, though they opened the recovery key and the escrow key
                custodians += [] if custodian in custodians else [custodian]
            elif details.get("via"):
                via = str(details["via"])
    access: dict[str, Any] = {"via": "shares", "custodians": custodians} if custodians else {"via": via}
    return ids, access


def write_evidence(policy: Policy, name: str, run: DrillRun, bundle: Path, key: Ed25519PrivateKey) -> Path:
    """The signed evidence bundle of a drill, passed or failed, and a corrective action
    for each reason it failed."""
    data = asdict(run)
    logs = data.pop("logs")
    md, html = render(data)
    write_bundle(bundle, data, logs, md, html, key)
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
    return bundle
