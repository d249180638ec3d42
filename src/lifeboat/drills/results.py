"""The drills' results as their signed evidence vouches for them: what `status`, the
dashboard, the daemon's metrics and `drill list` report of the drills.

An evidence directory lives beside the policy, where an insider with the host can write: a
drill.json planted there, or edited to say "pass", must not make an asset look tested. A
result counts only when its bundle's SHA256SUMS is signed by a drill key the repository's
root key published, and lists drill.json's very bytes (drills/evidence.py
``vouched_drill``); a key a rotation replaced vouches only for drills started before.

The local audit log records each run, with its bundle and start, before the bundle is
written. So, per drill with runs in it: the bundle of the run that started last is read
wherever it is (a drill run with ``--evidence-dir`` counts) and must be that very run (its
start, and its drill.json's own list of the run's audit entries), and no result of that
drill may have started after it (a key kept from before a rotation cannot sign a newer one).
Of two different signed results of one run, the audited one stands. A host whose audit log
holds no run of a drill (a status host that runs none) has none of these checks for it.

A bundle that fails is refused and named (``RefusedBundle``); whether a refusal is news is
``RefusedBundle.matters``: not an old one behind the newest result that holds.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lifeboat.crypto.signed import DEFAULT_SKEW
from lifeboat.drills.evidence import DRILL_JSON, claimed, is_bundle_name, parse_start, vouched_drill
from lifeboat.errors import IntegrityError

# where a bundle whose drill.json claims no start sorts: first, it is checked whatever else
_LATEST = datetime.max.replace(tzinfo=UTC)

# the drill keys to trust: fingerprint -> when a rotation replaced it (None: in use)
TrustedKeys = Mapping[str, datetime | None]

# How long after a run's verdict is audited its bundle may still be the empty directory
# reserve_bundle made: the evidence is signed and renamed onto it right after (seconds). A
# status read then is not shown a refusal; past it, the run ended before its evidence was
# written, and that is named. Counted from the first entry naming the bundle (more lines do
# not renew it); docs/design/threat-model.md says what an insider can still do with it.
EVIDENCE_WRITE_GRACE = timedelta(minutes=5)
NEVER_WRITTEN = "its evidence was never written (the run ended after its verdict was audited)"


@dataclass(frozen=True)
class RefusedBundle:
    """A bundle whose signature does not vouch for its drill.json, or that has gone."""

    bundle: str
    drills: tuple[str, ...]  # the drills whose evidence directory (or audit entry) names it
    problem: str
    claimed_start: str | None  # what its drill.json says, unchecked (None: nothing readable)
    newest_audited: bool = False  # the audit log names it as its drill's newest run's

    def describe(self) -> str:
        """The breach status reports for it."""
        return f"drill evidence {self.bundle} refused: {self.problem}"

    def matters(self, last_start: str | None) -> bool:
        """Whether it is news beside the newest result that holds (started ``last_start``):
        not when what it claims puts it before (old evidence from before pinning, say: even
        genuine, it could not change the verdict). The bundle the audit log names as its
        drill's newest always is: it is the newest word, whatever it claims."""
        claimed, last = parse_start(self.claimed_start), parse_start(last_start)
        return self.newest_audited or claimed is None or last is None or claimed >= last


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
    """What the audit log says of a drill's newest run that left a bundle."""

    drill: str
    bundle: Path
    time: datetime | None  # when it was audited: after the run started, before the bundle
    started: str | None  # the run's start (entries from before it was recorded: None)
    entry_id: str | None = None  # "seq-hash16", as the run's drill.json lists its entries
    outcome: str | None = None  # the verdict the entry audited ("pass", "fail")


def newest_audited_bundles(entries: Iterable[object], now: datetime | None = None) -> list[AuditedBundle]:
    """The bundle of each drill's newest audited run that left one: the one that started
    last (two runs of a drill may overlap), else, for entries from before starts were
    recorded (never ahead of one that has its start), the one audited last. An entry dated
    ahead of ``now`` beyond the skew allowed is no run (a line planted with a far future
    time or start would outrank every real one), nor one whose time is not a time. ``now``
    is the real clock's, as the audit log's times are (not lifeboat's shifted clock). Of
    several entries naming one bundle, the earliest time and the worst verdict are the
    bundle's: more lines cannot renew its grace (``EVIDENCE_WRITE_GRACE``) or turn its
    failure into a pass."""
    latest = (now or datetime.now(UTC)) + DEFAULT_SKEW
    newest: dict[str, AuditedBundle] = {}
    first: dict[Path, datetime | None] = {}
    passed: dict[Path, bool] = {}
    for entry in entries:
        audited = _audited_bundle(entry)
        if audited is None or audited.time is None or audited.time > latest:
            continue
        if audited.started is not None and (parse_start(audited.started) or latest) > latest:
            continue
        first[audited.bundle] = _earlier(first.get(audited.bundle, audited.time), audited.time)
        passed[audited.bundle] = passed.get(audited.bundle, True) and audited.outcome == "pass"
        held = newest.get(audited.drill)
        if held is None or _rank(audited) >= _rank(held):
            newest[audited.drill] = audited
    return [
        dataclasses.replace(
            a, time=first[a.bundle], outcome=a.outcome if passed[a.bundle] or a.outcome != "pass" else "fail"
        )
        for a in newest.values()
    ]


def _earlier(one: datetime | None, other: datetime | None) -> datetime | None:
    return min(one, other) if one is not None and other is not None else one or other


def _rank(entry: AuditedBundle) -> tuple[bool, datetime]:
    """How audited runs of a drill order: those whose start was recorded after those from
    before that, then by start."""
    return parse_start(entry.started) is not None, _audited_start(entry)


@dataclass(frozen=True)
class FailedWithoutEvidence:
    """A drill whose newest audited run failed before it left a bundle."""

    drill: str
    time: str  # when it was audited
    error: str


def failed_without_evidence(entries: Iterable[object]) -> list[FailedWithoutEvidence]:
    """Each drill whose newest audited run failed without leaving a bundle (the recovery key
    refused, the storage down, the evidence directory not made): nobody has shown its assets
    come back since. Taken from the audit log as it is (`audit verify` checks the log): a
    planted failure only adds a breach."""
    newest: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}  # drill -> (entry, details)
    for entry in entries:
        details = entry.get("details") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or entry.get("operation") != "drill" or not isinstance(details, dict):
            continue
        if isinstance(details.get("drill"), str):
            newest[details["drill"]] = (entry, details)
    return [
        FailedWithoutEvidence(drill, str(entry.get("time")), str(details.get("error") or "no evidence"))
        for drill, (entry, details) in newest.items()
        if entry.get("outcome") != "ok" and not details.get("bundle")
    ]


def _audited_bundle(entry: object) -> AuditedBundle | None:
    details = entry.get("details") if isinstance(entry, dict) else None
    if not isinstance(entry, dict) or entry.get("operation") != "drill" or not isinstance(details, dict):
        return None
    drill, bundle, started = details.get("drill"), details.get("bundle"), details.get("started")
    if not isinstance(drill, str) or not isinstance(bundle, str) or not bundle or "\0" in bundle:
        return None
    seq, digest = entry.get("seq"), entry.get("hash")
    entry_id = f"{seq:012d}-{digest[:16]}" if isinstance(seq, int) and isinstance(digest, str) else None
    run_start = started if isinstance(started, str) else None
    outcome = entry.get("outcome") if isinstance(entry.get("outcome"), str) else None
    return AuditedBundle(drill, Path(bundle), parse_start(entry.get("time")), run_start, entry_id, outcome)


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
    *,
    every: bool = False,
    now: datetime | None = None,
) -> DrillResults:
    """The results in the drills' evidence directories (drill name -> directory) and the
    ``audited`` bundles of the policy's drills. ``trusted_keys`` is asked once, and only
    when there is a bundle to check. Bundles are checked newest claim first, and (unless
    ``every``: the dashboard lists every drill) one claiming to be older than a whole run
    (not stopped) of each drill whose directory holds it, that holds, is not checked at all:
    it could be neither an asset's last drill nor a refusal that matters
    (``RefusedBundle.matters``). A signature costs ~0.5 ms, and years of drills leave
    hundreds of bundles. A result must be of a drill whose directory (or audit entry)
    holds it: status credits a result to the assets the policy gives its drill. The newest
    audited run's bundle still being written (``EVIDENCE_WRITE_GRACE`` after ``now``) is
    passed over: its drill's last result is the one before."""
    now = now or datetime.now(UTC)  # the audit log's clock (clock.py: not shifted)
    audited = [a for a in audited if a.drill in evidence_dirs]
    bundles = _bundles(evidence_dirs, audited)
    if not bundles:
        return DrillResults()
    trusted = trusted_keys()
    by_bundle = {a.bundle: a for a in audited}
    claims = {bundle: claimed(bundle) for bundle in bundles}
    starts = {bundle: parse_start(start) for bundle, (start, _) in claims.items()}
    out = DrillResults()
    held: dict[tuple[Any, datetime], dict[str, Any]] = {}  # one result per run
    newest: dict[str, datetime] = {}  # per drill, the start of its newest result that holds
    for bundle in sorted(bundles, key=lambda b: starts[b] or _LATEST, reverse=True):
        drills, entry, claim = bundles[bundle], by_bundle.get(bundle), starts[bundle]
        behind = claim is not None and all(d in newest and claim < newest[d] for d in drills)
        former = claims[bundle][1] is not None and claims[bundle][1] not in evidence_dirs
        if (behind or former) and entry is None and not every:
            continue  # older than what holds, or of a drill the policy no longer has
        reserved = entry is not None and _is_empty_dir(bundle)
        signing = reserved and entry is not None and _being_signed(entry, now)
        if signing and entry is not None and entry.outcome == "pass":
            continue  # being signed: the drill's previous result stands meanwhile
        try:
            result = vouched_drill(bundle, trusted)
            started = _as_audited(result, entry, audited)
        except IntegrityError as exc:
            if not os.path.exists(bundle):
                problem = "missing"
            elif signing and entry is not None:  # a failed run is the newest word at once
                problem = f"its evidence is being signed; the audit log has its verdict: {entry.outcome}"
            else:
                problem = NEVER_WRITTEN if reserved else exc.message
            at = claim.isoformat() if claim is not None else None
            out.refused.append(RefusedBundle(str(bundle), drills, problem, at, entry is not None))
            continue
        if not isinstance(result.get("drill"), str) or result["drill"] not in evidence_dirs:
            continue  # a drill the policy no longer has (renamed, removed): no asset's
        if result.get("drill") not in drills:  # another drill's, put here: its assets are not these
            problem = f"a result of drill {result.get('drill')!r}, in the evidence of {', '.join(drills)}"
            out.refused.append(
                RefusedBundle(str(bundle), drills, problem, result["started"], entry is not None)
            )
            continue
        if not result.get("stopped"):  # a stopped run may have restored only some assets
            drill = str(result["drill"])
            newest[drill] = max(started, newest.get(drill, started))
        result["bundle"] = str(bundle)
        run = (result.get("drill"), started)
        other = held.setdefault(run, result)
        if other is result or _content(other) == _content(result):
            continue
        stands, refusals = _one_of_two(result, other, by_bundle)
        out.refused += [RefusedBundle(r["bundle"], drills, why, r["started"]) for r, why in refusals]
        held[run] = stands if stands is not None else {**other, "conflict": True}
    out.results = [r for r in held.values() if not r.get("conflict")]
    out.results.sort(key=lambda r: parse_start(r["started"]) or datetime.min.replace(tzinfo=UTC))
    return out


def _being_signed(entry: AuditedBundle, now: datetime) -> bool:
    """Whether the run's verdict was audited so lately that its evidence may still be being
    signed (its bundle, the empty directory reserved for it, is then no refusal yet). Never
    for an entry dated ahead of this clock beyond the skew allowed: a line planted in the
    log with a far future time would otherwise hide the drill's newest run for ever."""
    return entry.time is not None and -DEFAULT_SKEW <= now - entry.time <= EVIDENCE_WRITE_GRACE


def _is_empty_dir(path: Path) -> bool:
    """Whether ``path`` is the empty directory a bundle's evidence is renamed onto."""
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def _one_of_two(
    result: dict[str, Any], other: dict[str, Any], audited: Mapping[Path, AuditedBundle]
) -> tuple[dict[str, Any] | None, list[tuple[dict[str, Any], str]]]:
    """Two different signed results of one run (only a key kept from before a rotation can
    make that): the one whose bundle the audit log names stands and the other is refused;
    neither stands when it names neither. Returns what stands and what is refused, why."""
    named = next((r for r in (result, other) if Path(r["bundle"]) in audited), None)
    if named is None:
        return None, [(r, "another signed result of the same run differs") for r in (other, result)]
    dropped = other if named is result else result
    return named, [(dropped, f"signed for the same run as {named['bundle']}, with other results")]


def _as_audited(
    result: dict[str, Any], entry: AuditedBundle | None, audited: list[AuditedBundle]
) -> datetime:
    """The result's start, once it agrees with the audit log: the run its drill's newest
    entry names when this is that entry's bundle, and never after that entry."""
    started = parse_start(result.get("started"))
    if started is None:
        raise IntegrityError(f"{DRILL_JSON} is not a drill record")
    if entry is not None and not _is_run(result, entry, started):
        raise IntegrityError(f"not the run the audit log names for it (started {entry.started or '?'})")
    if started > max((_audited_start(a) for a in audited if a.drill == result.get("drill")), default=started):
        raise IntegrityError("started after the newest run of its drill in the audit log")
    return started


def _is_run(result: dict[str, Any], entry: AuditedBundle, started: datetime) -> bool:
    """Whether a result is the run an audit entry names: its start, and its own list of the
    run's audit entries (which holds the entry itself, its sequence and hash)."""
    if entry.started is not None and parse_start(entry.started) != started:
        return False
    listed = result.get("audit_entries")
    return entry.entry_id is None or not isinstance(listed, list) or entry.entry_id in listed


def _audited_start(entry: AuditedBundle) -> datetime:
    """When the audited run started: as recorded, or (entries from before that) no later
    than it was audited."""
    return parse_start(entry.started) or entry.time or datetime.max.replace(tzinfo=UTC)


def _content(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "bundle"}
