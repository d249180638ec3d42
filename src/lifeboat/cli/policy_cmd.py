"""`lifeboat policy check`: validate the policy and show what it promises."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from lifeboat.cli.app import app
from lifeboat.cli.common import console, print_json, run_context
from lifeboat.policy import format_duration
from lifeboat.policy_feasibility import Finding, feasibility, reachability_findings

if TYPE_CHECKING:
    from lifeboat.policy import Policy


policy_app = typer.Typer(help="The policy file.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def check(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    offline: bool = typer.Option(False, "--offline", help="Do not connect to PostgreSQL servers."),
) -> None:
    """Validate the policy; per asset: targets, schedule, retention and whether they can be met."""
    policy = run_context(ctx).policy()
    findings = feasibility(policy) + _escrow_findings(policy)
    if not offline:
        from lifeboat.assets.registry import kind_of

        findings += reachability_findings(policy)
        for name, asset in policy.assets.items():
            notes = kind_of(asset).online_findings(policy, name, asset)
            findings += [Finding(name, note.level, note.message) for note in notes]
    rows: list[dict[str, Any]] = []
    for name, asset in policy.assets.items():
        cls = policy.classes[asset.class_]
        mine = [f for f in findings if f.asset == name]
        verdict = "error" if any(f.level == "error" for f in mine) else "warn" if mine else "ok"
        rows.append(
            {
                "asset": name,
                "kind": asset.kind,
                "class": asset.class_,
                "rpo": format_duration(cls.rpo),
                "rto": format_duration(cls.rto),
                "schedule": asset.schedule,
                "window": str(asset.window or ""),
                "retention": cls.retention.summary(),
                "min_days": policy.effective_min_days(name),
                "retention_sources": retention_sources(policy, name),
                "drill_every": format_duration(cls.drill_every),
                "verdict": verdict,
            }
        )
    if json_out:
        print_json(
            {
                "file": str(policy.path),
                "mode": policy.deployment.mode,
                "assets": rows,
                "findings": findings,
                "escrow_threshold": policy.escrow_threshold(),
                "escrow": _escrow(policy),
            }
        )
    else:
        table = Table(
            "asset", "kind", "class", "RPO", "RTO", "schedule", "window", "retention", "drills", "verdict"
        )
        for r in rows:
            colour = {"ok": "green", "warn": "yellow", "error": "red"}[r["verdict"]]
            table.add_row(
                r["asset"],
                r["kind"],
                r["class"],
                r["rpo"],
                r["rto"],
                r["schedule"] or "-",
                r["window"] or "-",
                describe_retention(r["retention_sources"]),
                r["drill_every"],
                f"[{colour}]{r['verdict']}[/{colour}]",
            )
        escrow = _escrow(policy)
        console.print(
            f"{policy.path}: valid, mode {policy.deployment.mode}, "
            + (
                f"escrow {escrow['threshold']}-of-{escrow['custodians']} (from {escrow['source']})"
                if escrow
                else "no escrow (no [escrow] custodians)"
            ),
            markup=False,
            soft_wrap=True,
        )
        console.print(table)
        for f in findings:
            console.print(f"{f.level}: {f.asset}: {f.message}", markup=False, soft_wrap=True)
    if any(f.level == "error" for f in findings):
        raise typer.Exit(1)


RETENTION_KEYS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def retention_sources(policy: Policy, asset: str) -> dict[str, dict[str, Any]]:
    """Each effective retention value and where it comes from: the class, lifeboat's
    default (which merges into a class that names only some keys), or the mode's minimum age."""
    name = policy.assets[asset].class_
    retention = policy.classes[name].retention
    stated = retention.model_fields_set
    out = {
        key: {"value": getattr(retention, key), "from": f"classes.{name}" if key in stated else "default"}
        for key in RETENTION_KEYS
        if getattr(retention, key)
    }
    effective = policy.effective_min_days(asset)
    if effective:
        from_class = "min_days" in stated and retention.min_days == effective
        out["min_days"] = {
            "value": effective,
            "from": f"classes.{name}" if from_class else f"mode {policy.deployment.mode}",
        }
    return out


def describe_retention(sources: dict[str, dict[str, Any]]) -> str:
    """`last 3 (classes.x); daily 7, weekly 4, monthly 12 (default); min 35d (mode production)`."""
    groups: dict[str, list[str]] = {}
    for key, item in sources.items():
        text = f"min {item['value']}d" if key == "min_days" else f"{key} {item['value']}"
        groups.setdefault(item["from"], []).append(text)
    return "; ".join(f"{', '.join(items)} ({origin})" for origin, items in groups.items()) or "keep all"


def _escrow(policy: Policy) -> dict[str, Any] | None:
    """The effective M-of-N and where M comes from; None without custodians."""
    if not policy.escrow.custodians:
        return None
    threshold, source = policy.escrow_source()
    return {"threshold": threshold, "custodians": len(policy.escrow.custodians), "source": source}


def _escrow_findings(policy: Policy) -> list[Finding]:
    from lifeboat.crypto.escrow import split_problem

    if not policy.escrow.custodians:
        return []
    threshold, source = policy.escrow_source()
    problem = split_problem(threshold, list(policy.escrow.custodians))
    if problem is None:
        return []
    m_of_n = f"{threshold}-of-{len(policy.escrow.custodians)}"
    return [Finding("escrow", "error", f"{m_of_n} ({source}): {problem}")]
