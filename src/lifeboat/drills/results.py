"""The drills' results as their signed evidence vouches for them: what `status`, the
dashboard, the daemon's metrics and `drill list` report of the drills.

An evidence directory lives beside the policy, where an insider with the host can write: a
drill.json planted there, or edited to say "pass", must not make an asset look tested. A
result counts only when its bundle's SHA256SUMS is signed by a drill key the repository's
root key published (any of them: a rotation does not void older evidence) and lists
drill.json's very bytes (drills/evidence.py ``vouched_drill``). A bundle that fails is
refused and named, never skipped in silence. A repository from before writer identities
publishes no root key: its results are read as they are, like its snapshots.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifeboat.drills.evidence import DRILL_JSON, is_bundle_name, vouched_drill
from lifeboat.errors import IntegrityError

# the fingerprints of the drill keys to trust; None: a legacy repository, nothing to check
TrustedKeys = Callable[[], frozenset[str] | None]


@dataclass(frozen=True)
class RefusedBundle:
    """A bundle whose signature does not vouch for its drill.json."""

    bundle: str
    drills: tuple[str, ...]  # the drills whose evidence directory holds it
    problem: str

    def describe(self) -> str:
        return f"drill evidence {self.bundle} refused: {self.problem}"


@dataclass
class DrillResults:
    """Every vouched-for result (drill.json, with its ``bundle``), oldest first, and every
    bundle refused."""

    results: list[dict[str, Any]] = field(default_factory=list)
    refused: list[RefusedBundle] = field(default_factory=list)

    def last_of(self, drill: str) -> dict[str, Any] | None:
        """The newest result of ``drill``."""
        return next((r for r in reversed(self.results) if r.get("drill") == drill), None)


def _bundles(evidence_dirs: Mapping[str, Path]) -> dict[Path, tuple[str, ...]]:
    """Each bundle of the evidence directories, with the drills whose directory holds it."""
    found: dict[Path, tuple[str, ...]] = {}
    for drill, evidence_dir in evidence_dirs.items():
        for path in sorted(Path(evidence_dir).glob(f"*/{DRILL_JSON}")):
            if is_bundle_name(path.parent.name):
                found[path.parent] = (*found.get(path.parent, ()), drill)
    return found


def drill_results(evidence_dirs: Mapping[str, Path], trusted_keys: TrustedKeys) -> DrillResults:
    """The results in the drills' evidence directories (drill name -> directory).
    ``trusted_keys`` is asked once, and only when there is a bundle to check."""
    bundles = _bundles(evidence_dirs)
    if not bundles:
        return DrillResults()
    trusted = trusted_keys()
    out = DrillResults()
    for bundle, drills in bundles.items():
        try:
            result = _read(bundle, trusted)
        except IntegrityError as exc:
            out.refused.append(RefusedBundle(str(bundle), drills, exc.message))
            continue
        result["bundle"] = str(bundle)
        out.results.append(result)
    out.results.sort(key=lambda r: str(r["started"]))
    return out


def _read(bundle: Path, trusted: frozenset[str] | None) -> dict[str, Any]:
    if trusted is not None:
        return vouched_drill(bundle, trusted)
    try:
        result = json.loads((bundle / DRILL_JSON).read_bytes())
    except (OSError, ValueError):
        raise IntegrityError(f"{DRILL_JSON} is not a drill record") from None
    if not isinstance(result, dict) or not isinstance(result.get("started"), str):
        raise IntegrityError(f"{DRILL_JSON} is not a drill record")
    return result
