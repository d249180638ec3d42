"""What `status` reads of a policy, without pydantic: the data classes' targets, each asset's
kind, class, host and the settings its kind's status hooks ask for, the drills' evidence.

Monitoring polls `status`; validating a whole policy (pydantic's import and model building)
costs more than the rest of it. A validated policy gives its view (`StatusView.of`), which
`cli/policy_slice.py` keeps for the next run of the same policy file, as it does for `wal
push`. The view may hold a dsn with its password (a kind's status settings), so it is kept
encrypted there, never in a log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lifeboat.policy import Policy


@dataclass(frozen=True)
class ClassTargets:
    """A data class as status judges its assets."""

    rpo: timedelta
    rto: timedelta
    success_target: float
    key_max_age: timedelta
    drill_every: timedelta


@dataclass(frozen=True)
class AssetFacts:
    """One asset: its kind, class, where it lives (the policy's ``host``, else what its kind
    says; None: this machine) and its kind's status settings (``AssetKind.status_settings``)."""

    kind: str
    class_: str
    host: str | None
    settings: Mapping[str, Any] = field(default_factory=dict, repr=False)  # may hold a password


@dataclass(frozen=True)
class DrillFacts:
    evidence_dir: Path  # resolved against the policy file's directory (cli/policy_slice.py checks it)
    assets: tuple[str, ...]  # the assets it restores (drills/runner.py drilled_assets)
    every: timedelta
    copy: str | None = None  # [copies.NAME] the drill reads from (its drill key may be the copy's)


@dataclass(frozen=True)
class StatusView:
    assets: Mapping[str, AssetFacts]
    classes: Mapping[str, ClassTargets]
    drills: Mapping[str, DrillFacts]
    state_dir: Path
    base_dir: Path
    has_copies: bool  # [copies.NAME]: status reads their lag from the full policy

    @classmethod
    def of(cls, policy: Policy) -> StatusView:
        from lifeboat.assets.registry import kind_of
        from lifeboat.drills.runner import drilled_assets

        return cls(
            assets={
                name: AssetFacts(
                    asset.kind,
                    asset.class_,
                    asset.host or kind_of(asset).host(asset),
                    _plain(kind_of(asset).status_settings(asset)),
                )
                for name, asset in policy.assets.items()
            },
            classes={
                name: ClassTargets(c.rpo, c.rto, c.success_target, c.key_max_age, c.drill_every)
                for name, c in policy.classes.items()
            },
            drills={
                name: DrillFacts(
                    Path(d.evidence_dir), tuple(drilled_assets(policy, d)), d.every, d.repository
                )
                for name, d in policy.drills.items()
            },
            state_dir=Path(policy.state_dir),
            base_dir=Path(policy.base_dir),
            has_copies=bool(policy.copies),
        )

    def drill_assets(self, drill: str) -> list[str]:
        """The assets a drill restores (none for a drill the policy does not have)."""
        facts = self.drills.get(drill)
        return list(facts.assets) if facts is not None else []

    def action_period(self, source: str, asset: str | None) -> timedelta:
        """How long a corrective action may stay open (``drills.actions.open_period``)."""
        from lifeboat.drills.actions import open_period

        facts = self.assets.get(asset) if asset else None
        drill = self.drills.get(source.removeprefix("drill "))
        class_period = self.classes[facts.class_].drill_every if facts else None
        return open_period(class_period, drill.every if drill else None)

    def to_json(self) -> dict[str, Any]:
        return {
            "assets": {
                name: {"kind": a.kind, "class": a.class_, "host": a.host, "settings": dict(a.settings)}
                for name, a in self.assets.items()
            },
            "classes": {
                name: {
                    "rpo": c.rpo.total_seconds(),
                    "rto": c.rto.total_seconds(),
                    "success_target": c.success_target,
                    "key_max_age": c.key_max_age.total_seconds(),
                    "drill_every": c.drill_every.total_seconds(),
                }
                for name, c in self.classes.items()
            },
            "drills": {
                name: {
                    "evidence_dir": str(d.evidence_dir),
                    "assets": list(d.assets),
                    "every": d.every.total_seconds(),
                    "copy": d.copy,
                }
                for name, d in self.drills.items()
            },
            "state_dir": str(self.state_dir),
            "base_dir": str(self.base_dir),
            "has_copies": self.has_copies,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StatusView:
        def seconds(value: Any) -> timedelta:
            return timedelta(seconds=float(value))

        return cls(
            assets={
                str(name): AssetFacts(
                    str(a["kind"]),
                    str(a["class"]),
                    str(a["host"]) if a["host"] is not None else None,
                    dict(a["settings"]),
                )
                for name, a in data["assets"].items()
            },
            classes={
                str(name): ClassTargets(
                    seconds(c["rpo"]),
                    seconds(c["rto"]),
                    float(c["success_target"]),
                    seconds(c["key_max_age"]),
                    seconds(c["drill_every"]),
                )
                for name, c in data["classes"].items()
            },
            drills={
                str(name): DrillFacts(
                    Path(d["evidence_dir"]),
                    tuple(str(a) for a in d["assets"]),
                    seconds(d["every"]),
                    str(d["copy"]) if d.get("copy") is not None else None,
                )
                for name, d in data["drills"].items()
            },
            state_dir=Path(data["state_dir"]),
            base_dir=Path(data["base_dir"]),
            has_copies=bool(data["has_copies"]),
        )


def _plain(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as they come back from the JSON they are kept in: the view a validated
    policy gives and the one read back are the same (a tuple would come back a list)."""
    return dict(json.loads(json.dumps(dict(settings))))
