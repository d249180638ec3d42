"""The drills' results as their signed evidence vouches for them: what `status`, the
dashboard, the daemon's metrics and `drill list` report of the drills.

An evidence directory lives beside the policy, where an insider with the host can write: a
drill.json planted there, or edited to say "pass", must not make an asset look tested. A
result counts only when its bundle's SHA256SUMS is signed by a drill key the repository's
root key published, and lists drill.json's very bytes (drills/evidence.py
``vouched_drill``); a key a rotation replaced vouches only for drills started before. A
bundle that fails is refused and named, never skipped in silence. The audit log names each
drill's bundle: the newest one of each drill is read from there too, so a drill run with
``--evidence-dir`` counts, and one whose bundle has gone is named (``missing``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lifeboat.drills.evidence import DRILL_JSON, claimed_start, is_bundle_name, vouched_drill
from lifeboat.errors import IntegrityError

# the drill keys to trust: fingerprint -> when a rotation replaced it (None: in use)
TrustedKeys = Mapping[str, datetime | None]


@dataclass(frozen=True)
class RefusedBundle:
    """A bundle whose signature does not vouch for its drill.json, or that has gone."""

    bundle: str
    drills: tuple[str, ...]  # the drills whose evidence directory (or audit entry) names it
    problem: str
    claimed_start: str | None  # what its drill.json says, unchecked (None: nothing readable)
    newest_audited: bool = False  # the audit log names it as its drill's newest run's

    def describe(self) -> str:
        return f"drill evidence {self.bundle} refused: {self.problem}"

    def matters(self, last_start: str | None) -> bool:
        """Whether it is news beside the newest result that holds (started ``last_start``):
        not when what it claims puts it before (old evidence from before pinning, say: even
        genuine, it could not change the verdict). The bundle the audit log names as its
        drill's newest always is: it is the newest word, whatever it claims."""
        claimed = self.claimed_start
        return self.newest_audited or claimed is None or last_start is None or claimed >= last_start


@dataclass
class DrillResults:
    """Every vouched-for result (drill.json, with its ``bundle``), oldest first, and every
    bundle refused."""

    results: list[dict[str, Any]] = field(default_factory=list)
    refused: list[RefusedBundle] = field(default_factory=list)

    def last_of(self, drill: str) -> dict[str, Any] | None:
        """The newest result of ``drill``."""
        return next((r for r in reversed(self.results) if r.get("drill") == drill), None)


@dataclass(frozen=True)
class AuditedBundle:
    """The bundle the audit log says a drill's newest run left."""

    drill: str
    bundle: Path
    time: str  # the audit entry's


def newest_audited_bundles(entries: Iterable[Mapping[str, Any]]) -> list[AuditedBundle]:
    """The bundle of each drill's newest audited run that left one."""
    newest: dict[str, AuditedBundle] = {}
    for entry in entries:
        details = entry.get("details")
        if entry.get("operation") != "drill" or not isinstance(details, dict):
            continue
        drill, bundle = details.get("drill"), details.get("bundle")
        if isinstance(drill, str) and isinstance(bundle, str) and bundle:
            newest[drill] = AuditedBundle(drill, Path(bundle), str(entry.get("time", "")))
    return list(newest.values())


def _bundles(
    evidence_dirs: Mapping[str, Path], audited: Iterable[AuditedBundle]
) -> dict[Path, tuple[str, ...]]:
    """Each bundle of the evidence directories and of the audit log, with the drills that
    name it."""
    found: dict[Path, tuple[str, ...]] = {}
    for drill, evidence_dir in evidence_dirs.items():
        for path in sorted(Path(evidence_dir).glob(f"*/{DRILL_JSON}")):
            if is_bundle_name(path.parent.name):
                found[path.parent] = (*found.get(path.parent, ()), drill)
    for entry in audited:
        if entry.drill not in found.get(entry.bundle, ()):
            found[entry.bundle] = (*found.get(entry.bundle, ()), entry.drill)
    return found


def read_drill_results(
    evidence_dirs: Mapping[str, Path],
    trusted_keys: Callable[[], TrustedKeys],
    audited: Iterable[AuditedBundle] = (),
) -> DrillResults:
    """The results in the drills' evidence directories (drill name -> directory) and the
    ``audited`` bundles of the policy's drills. ``trusted_keys`` is asked once, and only
    when there is a bundle to check."""
    audited = [a for a in audited if a.drill in evidence_dirs]
    bundles = _bundles(evidence_dirs, audited)
    newest = {a.bundle for a in audited}
    if not bundles:
        return DrillResults()
    trusted = trusted_keys()
    out = DrillResults()
    for bundle, drills in bundles.items():
        try:
            result = vouched_drill(bundle, trusted)
        except IntegrityError as exc:
            problem = "missing" if not bundle.exists() else exc.message
            refused = RefusedBundle(str(bundle), drills, problem, claimed_start(bundle), bundle in newest)
            out.refused.append(refused)
            continue
        result["bundle"] = str(bundle)
        out.results.append(result)
    # one drill reached by two paths (the audit log's and a linked evidence directory's)
    unique = {(r.get("drill"), r["started"]): r for r in out.results}
    out.results = sorted(unique.values(), key=lambda r: str(r["started"]))
    return out
