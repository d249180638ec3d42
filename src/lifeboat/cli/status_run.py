"""What `status` does, without typer: `cli/entry.py` runs it directly (monitoring polls it)
and `cli/daemon_cmd.py` wraps it as a command, so both print the same bytes."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from lifeboat.cli.output import console, print_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.table import Table

    from lifeboat.ops.probe_child import ProbeChild
    from lifeboat.ops.status import AssetStatus
    from lifeboat.ops.status_view import StatusView
    from lifeboat.policy import Policy
    from lifeboat.runtime import Settings


def status_of_policy(policy: Policy, json_out: bool) -> int:
    """``status`` of a policy validated here (the typer command)."""
    from lifeboat.cli.policy_slice import PolicySlice
    from lifeboat.ops.status_view import StatusView

    return status(PolicySlice.of(policy), StatusView.of(policy), json_out, lambda: policy)


def probe_child_for(config: Path) -> ProbeChild | None:
    """A child process to ask the status probes in, forked now, before the policy is read
    (``ops/probe_child.py``): when the policy file names a kind whose probe imports a
    driver. Read from the raw TOML (the validation comes later and says what is wrong),
    and only from a regular file: a pipe (``-c <(envsubst < policy.tmpl)``) is read once,
    by the validation."""
    import functools
    import stat
    import tomllib

    from lifeboat.assets.registry import KINDS, plugin
    from lifeboat.errors import LifeboatError

    try:
        if not stat.S_ISREG(config.stat().st_mode):
            return None
        assets = tomllib.loads(config.read_text()).get("assets", {})
        kinds = {str(table.get("kind")) for table in assets.values()}
        modules = sorted({m for kind in kinds if kind in KINDS for m in plugin(kind).status_probe_imports})
    except (OSError, ValueError, AttributeError, LifeboatError):  # the validation says why
        return None
    if not modules:
        return None
    from lifeboat.ops.probe_child import ProbeChild, import_drivers

    return ProbeChild.start(functools.partial(import_drivers, modules))


def status(
    settings: Settings,
    view: StatusView,
    json_out: bool,
    policy: Callable[[], Policy],
    child: ProbeChild | None = None,
) -> int:
    """Print the status of every asset; the exit code (1 on any breach). ``policy``: the
    validated policy, asked for only when it has copies (their lag needs their locations);
    ``child``: where to ask the kinds' probes (else on threads of this process)."""
    from lifeboat import runtime
    from lifeboat.audit import anchoring_problem
    from lifeboat.ops.status import ask_probes, asset_status, fleet_groups, key_warnings
    from lifeboat.repo.immutability import tampering_problems

    asked = ask_probes(view, child=child)
    repo = runtime.open_for_write(settings)
    # a drill reading a copy may sign with a key issued there: the copy's location is in the
    # validated policy only, asked for when a bundle is checked
    read_copies = {d.copy for d in view.drills.values() if d.copy}
    with runtime.drill_copy_records(policy, read_copies) as records:
        groups = fleet_groups(asset_status(view, repo, asked=asked, copies=records))
    statuses = [s for _, group in groups for s in group]
    warnings = key_warnings(view, repo)
    unanchored = anchoring_problem(Path(view.state_dir) / "audit.jsonl")
    warnings += [unanchored] if unanchored else []
    tampered = [p.message for p in tampering_problems(repo)]
    copies = []
    if view.has_copies:
        from lifeboat.ops.replication import copy_states

        copies = copy_states(policy(), repo.snapshots())
    breached = any(s.breaches for s in statuses) or bool(tampered) or any(c.breach for c in copies)
    if json_out:
        hosts = [{"host": host, "assets": [s.asset for s in group]} for host, group in groups]
        assets = [asdict(s) for s in statuses]
        print_json(
            {
                "ok": not breached,
                "assets": assets,
                "hosts": hosts,
                "warnings": warnings,
                "tampered": tampered,
                "copies": [asdict(c) | {"breach": c.breach} for c in copies],
            }
        )
        return 1 if breached else 0
    out = console()
    for host, group in groups:
        breaching = sum(1 for s in group if s.breaches)
        out.print(f"host {host}: {len(group)} asset(s), {breaching} breaching", markup=False, soft_wrap=True)
        out.print(status_table(group))
    for s in statuses:
        out.print(
            f"{s.asset}: last drill {drill_cell(s)}; corrective actions {actions_cell(s)}",
            markup=False,
            soft_wrap=True,
        )
    for c in copies:
        out.print(c.describe(), markup=False, soft_wrap=True)
    for warning in warnings:
        out.print(f"[yellow]warning[/yellow]: {warning}")
    for message in tampered:
        out.print(f"tampered: {message}", soft_wrap=True, markup=False)
    return 1 if breached else 0


def status_table(statuses: list[AssetStatus]) -> Table:
    """One host's assets, riskiest first (exposure / RPO)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        "asset", "class", "last backup", "exposure / RPO", "last drill RTO / RTO", "30d success", "status"
    )
    for s in statuses:
        exposure = f"{s.exposure_s:.0f}s" if s.exposure_s is not None else "-"
        drill = f"{s.last_drill_rto_s:.1f}s" if s.last_drill_rto_s is not None else "-"
        rate = f"{s.success_rate_30d:.0%}" if s.success_rate_30d is not None else "-"
        state = "; ".join(s.breaches) if s.breaches else "ok"
        table.add_row(
            s.asset,
            s.data_class,
            s.last_backup or "never",
            f"{exposure} / {s.rpo_s:.0f}s",
            f"{drill} / {s.rto_s:.0f}s",
            rate,
            f"[{'red' if s.breaches else 'green'}]{escape(state)}[/]",  # breaches quote paths and errors
        )
    return table


def drill_cell(s: AssetStatus) -> str:
    if s.last_drill is None:
        return "never"
    verdict = "passed" if s.last_drill_verdict == "pass" else "FAILED"
    return f"{s.last_drill_name} {verdict} {s.last_drill[:19]} ({s.last_drill_bundle})"


def actions_cell(s: AssetStatus) -> str:
    if not s.open_actions:
        return "none open"
    overdue = (
        f", {len(s.overdue_actions)} overdue ({'; '.join(s.overdue_actions)})" if s.overdue_actions else ""
    )
    return f"{len(s.open_actions)} open ({', '.join(s.open_actions)}){overdue}"
