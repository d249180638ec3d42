"""Per-asset status: last backup, exposure against the RPO, last drill against the RTO,
backup success rate over 30 days. Shared by `status`, the dashboard and the metrics."""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifeboat import clock
from lifeboat.assets.kind import StatusProbe, StatusQuery
from lifeboat.assets.registry import plugin
from lifeboat.errors import LifeboatError
from lifeboat.ops.probe_child import import_drivers
from lifeboat.ops.status_view import AssetFacts, StatusView
from lifeboat.repo import Repository
from lifeboat.repo.records import RecordSource, key_created
from lifeboat.repo.trust import LEGACY_WARNING
from lifeboat.units import format_seconds

if TYPE_CHECKING:
    from lifeboat.drills.results import DrillResults, FailedWithoutEvidence, RefusedBundle
    from lifeboat.ops.probe_child import ProbeChild
    from lifeboat.repo import SnapshotInfo

# a drill a little past its cadence is not yet overdue (the next one started on time and is
# restoring): as long as the LifeboatDrillOverdue alert waits
DRILL_GRACE = timedelta(hours=1)

# how long status waits for the kinds' probes, from when they were asked: past a connect
# timeout (10 s), for a server that took the connection and then stopped answering
PROBE_WAIT_S = 60.0


@dataclass
class AssetStatus:
    asset: str
    kind: str
    data_class: str
    rpo_s: float
    rto_s: float
    last_backup: str | None = None
    exposure_s: float | None = None
    last_drill: str | None = None
    last_drill_rto_s: float | None = None
    last_drill_verdict: str | None = None
    last_drill_name: str | None = None
    last_drill_bundle: str | None = None
    # when the next drill is due: the class's drill_every after the last drill, or after the
    # first backup when never drilled (None: never backed up)
    drill_due: str | None = None
    open_actions: list[str] = field(default_factory=list)  # ids of open corrective actions
    overdue_actions: list[str] = field(default_factory=list)  # "CA-0001 due 2026-..."
    success_rate_30d: float | None = None
    bad_pages: int | None = None  # in the latest snapshot, when its pages were verified
    breaches: list[str] = field(default_factory=list)
    divergent: list[dict[str, Any]] = field(default_factory=list)  # WAL branches (postgres)
    host: str = ""  # where the asset lives (see asset_host)
    risk: float | None = None  # exposure / RPO; None: never backed up (the worst)
    archive_failure: str | None = None  # pg_stat_archiver: failing since the last success
    archiver_answered: bool | None = None  # the server answered (False: archive_failure
    # is unknown); None: the kind has no archiver


_ENTRY_FIELDS = ("operation", "time", "outcome")


def audit_entries(state_dir: Path) -> list[dict[str, Any]]:
    """The audit log's entries (a line that is not an entry is skipped). Read as lifeboat
    writes it: only a regular file, never through a link planted in the state dir, never a
    FIFO that would hold status (and the daemon's refresh) up; such a plant is a one-line
    ConfigError naming it."""
    from lifeboat.audit import read_log

    try:
        text = read_log(Path(state_dir) / "audit.jsonl").decode(errors="replace")
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        # every reader takes these three as strings: a line without them is skipped too
        if isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in _ENTRY_FIELDS):
            entries.append(entry)
    return entries


def failed_without_evidence(audit: list[dict[str, Any]]) -> list[FailedWithoutEvidence]:
    """Drills whose newest audited run failed before leaving a bundle (drills/results.py)."""
    from lifeboat.drills.results import failed_without_evidence as failed

    return failed(audit)


def drill_results(
    view: StatusView,
    repo: Repository,
    audit: list[dict[str, Any]],
    every: bool = False,
    copies: Mapping[str, Callable[[], RecordSource]] | None = None,
) -> DrillResults:
    """The policy's drills' results that their signed evidence vouches for, oldest first
    (each drill's newest, unless ``every``), and the bundles refused (drills/results.py);
    ``audit``: the audit log's entries; ``copies``: the records of the copies drills read
    (runtime.drill_copy_records), whose drill keys the root key published too."""
    from lifeboat.drills.results import newest_audited_bundles, read_drill_results
    from lifeboat.drills.signing_key import trusted_drill_keys

    evidence_dirs = {name: drill.evidence_dir for name, drill in view.drills.items()}
    keys = functools.partial(trusted_drill_keys, repo, copies)
    return read_drill_results(evidence_dirs, keys, newest_audited_bundles(audit), every=every)


@dataclass
class Probes:
    """The kinds' status probes (a server's own view), every one asked at once: clusters
    that do not answer during an outage hold status up for one connect timeout, not one
    each. Each runs on a daemon thread of its own (they wait on the network, not the CPU):
    an interrupted status (Ctrl-C, SIGTERM) or a repository error does not wait for them,
    and an answer that has not come by ``wait`` (``PROBE_WAIT_S``) after the asking is no
    answer. One-shot `status` asks them in a child process instead (``ops/probe_child.py``)."""

    asked: dict[str, Future[Any]]
    deadline: float

    @classmethod
    def ask(
        cls,
        probes: dict[str, StatusProbe],
        wait: float | None = None,
        asked: dict[str, Future[Any]] | None = None,
    ) -> Probes:
        """``probes`` asked now, each on a thread; ``asked``: those asked elsewhere already."""
        on_threads = {name: _ask(probe) for name, probe in probes.items()}
        return cls((asked or {}) | on_threads, time.monotonic() + (PROBE_WAIT_S if wait is None else wait))

    def answer(self, name: str) -> Any:
        """The probe's answer (None: the asset has no probe, or its answer did not come in
        time); what the probe raised is raised here."""
        future = self.asked.get(name)
        if future is None:
            return None
        try:
            return future.result(timeout=max(0.0, self.deadline - time.monotonic()))
        except TimeoutError:
            return None


# Probes still out, by key, in this process: a server that took the connection and never
# answers holds its probe's thread until the connection dies; the daemon asks again at
# every refresh, and waits on that probe rather than start one more
_OUT: dict[str, Future[Any]] = {}
_OUT_LOCK = threading.Lock()


def _ask(probe: StatusProbe) -> Future[Any]:
    with _OUT_LOCK:
        out = _OUT.get(probe.key)
        if out is not None and not out.done():
            return out
        future: Future[Any] = Future()
        _OUT[probe.key] = future
    answering = threading.Thread(target=_answer, args=(probe.ask, future), name="status probe")
    answering.daemon = True
    try:
        answering.start()
    except BaseException as exc:  # no thread to finish it: a later asking must not wait on it
        future.set_exception(exc)
        raise
    return future


def _answer(ask: Callable[[], Any], future: Future[Any]) -> None:
    try:
        future.set_result(ask())
    except BaseException as exc:  # given to the caller of Probes.answer
        future.set_exception(exc)


def ask_probes(view: StatusView, wait: float | None = None, child: ProbeChild | None = None) -> Probes:
    """Every asset's status probe, asked now: in ``child`` when given (and the probe can
    be sent there), else on a thread of its own once this thread imported its driver."""
    kinds = {name: plugin(asset.kind) for name, asset in view.assets.items()}
    probes = {name: kinds[name].status_probe(asset.settings) for name, asset in view.assets.items()}
    asking = {name: probe for name, probe in probes.items() if probe is not None}
    in_child: dict[str, Future[Any]] = {}
    if child is not None:
        for name, probe in asking.items():
            if (future := child.ask(name, probe.ask)) is not None:
                in_child[name] = future
        child.done_asking()
    on_threads = {name: probe for name, probe in asking.items() if name not in in_child}
    import_drivers(sorted({m for name in on_threads for m in kinds[name].status_probe_imports}))
    return Probes.ask(on_threads, wait, in_child)


def asset_status(
    view: StatusView,
    repo: Repository,
    now: datetime | None = None,
    probe_wait: float | None = None,
    asked: Probes | None = None,
    copies: Mapping[str, Callable[[], RecordSource]] | None = None,
) -> list[AssetStatus]:
    """Every asset's status; a kind's probe that has not answered ``probe_wait`` seconds
    (default ``PROBE_WAIT_S``) after the asking gives no answer (its asset's status then
    goes without it). ``asked``: the probes, when the caller asked them already;
    ``copies``: as for ``drill_results``."""
    now = now or clock.now()
    # asked before the repository is read, and read while they wait on the network
    asked = asked or ask_probes(view, probe_wait)
    # refused snapshots count for nothing, and are breaches (another writer's sealed header
    # is recognised by the asset its signature names)
    listing = repo.snapshot_listing(assets=list(view.assets))
    snapshots = listing.accepted
    refused_refs = repo.refused_refs()  # forged or squatted refs and WAL: breaches too
    audit = audit_entries(view.state_dir)
    drills = drill_results(view, repo, audit, copies=copies)
    unevidenced = failed_without_evidence(audit)
    month_ago = (now - timedelta(days=30)).isoformat()
    statuses = []
    for name, asset in view.assets.items():
        cls = view.classes[asset.class_]
        st = AssetStatus(name, asset.kind, asset.class_, cls.rpo.total_seconds(), cls.rto.total_seconds())
        mine = [s for s in snapshots if s.asset == name]
        query = StatusQuery(repo, name, asset.settings, mine, audit, asked.answer(name), now)
        extras = plugin(asset.kind).status(query)
        restorable = (s.data_time for s in mine if s.id not in extras.unrestorable)
        newest = max(restorable, default=None)  # a sharded backup: its listing's time
        if extras.newest is not None:
            newest = max(newest, extras.newest) if newest else extras.newest
        st.bad_pages, st.archive_failure = extras.bad_pages, extras.archive_failure
        st.archiver_answered = extras.archiver_answered
        st.divergent = extras.divergent
        st.breaches += extras.breaches
        st.host = asset_host(asset)
        st.breaches += [r.describe() for r in listing.refused if r.asset == name]
        st.breaches += [r.describe() for r in refused_refs if r.asset == name]
        if newest is not None:
            st.last_backup = newest.isoformat(timespec="seconds")
            # never below 0: a time ahead of this clock (within the skew allowed) is no credit
            st.exposure_s = max(0.0, round((now - newest).total_seconds(), 1))
            st.risk = round(st.exposure_s / max(st.rpo_s, 1.0), 4)
            if st.exposure_s > st.rpo_s:
                st.breaches.append(f"exposure {st.exposure_s:.0f}s exceeds RPO {st.rpo_s:.0f}s")
        else:
            st.breaches.append("no restorable backup" if mine else "never backed up")
        runs = [
            e
            for e in audit
            if e["operation"] == "backup" and e.get("asset") == name and e["time"] >= month_ago
        ]
        if runs:
            st.success_rate_30d = round(sum(e["outcome"] == "ok" for e in runs) / len(runs), 4)
            if st.success_rate_30d < cls.success_target:
                st.breaches.append(f"success rate {st.success_rate_30d:.0%} below {cls.success_target:.0%}")
        last_drill_findings(st, drills.results, view.drill_assets)
        unevidenced_drill_findings(st, unevidenced, view.drill_assets)
        drill_cadence_findings(st, cls.drill_every, now, first_backup(mine, audited_backups(audit, name)))
        refused_drill_findings(st, drills.refused, view.drill_assets)
        statuses.append(st)
    corrective_action_findings(view, statuses, now)
    return statuses


def asset_host(asset: AssetFacts) -> str:
    """The policy's ``host``, else where the asset's kind says it lives (a PostgreSQL
    cluster's host from its dsn: the primary's), else this machine."""
    return asset.host or socket.gethostname()


def _risk_key(st: AssetStatus) -> tuple[int, float, str]:
    return (0, 0.0, st.asset) if st.risk is None else (1, -st.risk, st.asset)


def fleet_groups(statuses: list[AssetStatus]) -> list[tuple[str, list[AssetStatus]]]:
    """Assets grouped by host, riskiest first within a host, and the host whose riskiest
    asset is worst first: an operator reads from the top until things look fine."""
    by_host: dict[str, list[AssetStatus]] = {}
    for st in sorted(statuses, key=_risk_key):
        by_host.setdefault(st.host, []).append(st)
    return sorted(by_host.items(), key=lambda item: (_risk_key(item[1][0]), item[0]))


def fleet_order(statuses: list[AssetStatus]) -> list[AssetStatus]:
    return [st for _, group in fleet_groups(statuses) for st in group]


def last_drill_findings(
    st: AssetStatus, drills: list[dict[str, Any]], drill_assets: Callable[[str], list[str]]
) -> None:
    """The newest drill of this asset: its verdict is the asset's, since a failed drill
    means nobody has shown the asset can come back. A drill counts for the assets the
    policy gives it and it restored, or meant to: one that stopped before it restored an
    asset (a full disk, a source out of reach) counts too, its failure the newest word on
    the asset, not the pass before it."""
    for drill in reversed(drills):
        name = str(drill.get("drill", ""))
        achieved = _mapping(drill.get("achieved"))
        meant = set(achieved) | set(_mapping(drill.get("targets")))  # targets: set as each restore starts
        if drill.get("stopped") and not meant:  # stopped before its first restore
            meant = set(drill_assets(name))
        if st.asset not in meant or st.asset not in drill_assets(name):
            continue
        st.last_drill = str(drill["started"])
        st.last_drill_rto_s = achieved_rto(drill, st.asset)
        verdict = drill.get("verdict")
        st.last_drill_verdict = verdict if isinstance(verdict, str) else "unknown"
        st.last_drill_name = name
        st.last_drill_bundle = drill.get("bundle")
        if st.last_drill_verdict != "pass":
            st.breaches.append(f"last drill {st.last_drill_name} failed ({st.last_drill[:19]})")
        if st.last_drill_rto_s is not None and st.last_drill_rto_s > st.rto_s:
            st.breaches.append(f"last drill RTO {st.last_drill_rto_s:.0f}s exceeds {st.rto_s:.0f}s")
        return


def achieved_rto(drill: dict[str, Any], asset: str) -> float | None:
    """The restore time a drill result measured for an asset (None: none, or not a number)."""
    rto = _mapping(_mapping(drill.get("achieved")).get(asset)).get("rto_s")
    return float(rto) if isinstance(rto, int | float) and not isinstance(rto, bool) else None


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def unevidenced_drill_findings(
    st: AssetStatus, failed: list[FailedWithoutEvidence], drill_assets: Callable[[str], list[str]]
) -> None:
    """A drill of this asset that failed after its last drill that holds, without leaving
    evidence, is a breach: its failure is the newest word on the asset."""
    from lifeboat.drills.evidence import parse_start

    last = parse_start(st.last_drill)
    for run in failed:
        when = parse_start(run.time)
        if st.asset in drill_assets(run.drill) and when is not None and (last is None or when > last):
            st.breaches.append(
                f"drill {run.drill} failed ({run.time[:19]}) without leaving evidence: {run.error}"
            )


def refused_drill_findings(
    st: AssetStatus, refused: list[RefusedBundle], drill_assets: Callable[[str], list[str]]
) -> None:
    """A refused bundle of a drill of this asset is a breach when it matters beside the
    asset's last drill that holds (drills/results.py ``RefusedBundle.matters``)."""
    for bundle in refused:
        if any(st.asset in drill_assets(d) for d in bundle.drills) and bundle.matters(st.last_drill):
            st.breaches.append(bundle.describe())


def audited_backups(audit: list[dict[str, Any]], asset: str) -> list[str]:
    """The times of the asset's successful backups in the audit log, oldest first."""
    return [
        e["time"]
        for e in audit
        if e["operation"] == "backup" and e.get("asset") == asset and e["outcome"] == "ok"
    ]


def first_backup(snapshots: list[SnapshotInfo], audited: list[str]) -> datetime | None:
    """Since when the asset has been backed up: its oldest snapshot held, or its first
    backup in the audit log when that is older (retention may have pruned it)."""
    times = [s.time for s in snapshots]
    for text in audited[:1]:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            continue
        if moment.tzinfo is not None:
            times.append(moment)
    return min(times, default=None)


def drill_cadence_findings(st: AssetStatus, every: timedelta, now: datetime, oldest: datetime | None) -> None:
    """A breach when nobody has shown the asset comes back within its class's
    ``drill_every``: since its last drill, or, never drilled, since it was first backed up
    (a new asset has one ``drill_every`` to get its first drill)."""
    since = datetime.fromisoformat(st.last_drill) if st.last_drill else oldest
    if since is None:
        return
    since = since if since.tzinfo else since.replace(tzinfo=UTC)
    st.drill_due = (since + every).isoformat(timespec="seconds")
    if now - since <= every + DRILL_GRACE:
        return
    cadence = f"the class drills every {format_seconds(every.total_seconds())}"
    if st.last_drill:
        st.breaches.append(f"drill overdue: last drilled {st.last_drill[:19]}, {cadence}")
    else:
        st.breaches.append(f"never drilled: backed up since {since.date().isoformat()}, {cadence}")


def corrective_action_findings(view: StatusView, statuses: list[AssetStatus], now: datetime) -> None:
    """Open corrective actions per asset (an action that names no asset counts for every
    asset of its drill); an overdue one is a breach (see drills/actions.py)."""
    from lifeboat.drills.actions import ledger_at

    by_name = {st.asset: st for st in statuses}
    for action in ledger_at(view.base_dir).load():
        if action.status != "open":
            continue
        assets = [action.asset] if action.asset else view.drill_assets(action.source.removeprefix("drill "))
        period = view.action_period(action.source, action.asset)
        due = action.due_time(period)
        for name in assets:
            st = by_name.get(name)
            if st is None:
                continue
            st.open_actions.append(action.id)
            if action.overdue(now, period):
                st.overdue_actions.append(f"{action.id} due {due.isoformat(timespec='seconds')}")
                st.breaches.append(f"corrective action {action.id} overdue since {due.date().isoformat()}")


def key_warnings(view: StatusView, repo: Repository, now: datetime | None = None) -> list[str]:
    """Backup keys older than the policy's maximum key age (the strictest class wins)."""
    now = now or clock.now()
    legacy = [LEGACY_WARNING] if repo.legacy else []
    if not view.classes:
        return legacy
    max_age = min(c.key_max_age for c in view.classes.values())
    try:
        created = key_created(repo, repo.key_id)
    except (LifeboatError, KeyError, ValueError):
        return legacy
    age = now - created
    if age > max_age:
        return [
            *legacy,
            f"backup key {repo.key_id} is {age.days} days old (maximum {max_age.days}): "
            "run 'lifeboat keys rotate'",
        ]
    return legacy


@dataclass(frozen=True)
class WalBacklog:
    segments: int
    lag_s: float


def wal_archive_backlog(pgdata: Path | None, spool: Path, now: float | None = None) -> WalBacklog:
    """WAL that PostgreSQL finished but the repository does not hold yet: segments marked
    ``.ready`` in pg_wal/archive_status (archive_command not done) plus files in the async
    spool (not drained). Its age is the archive lag, i.e. the RPO exposure from archiving."""
    now = now if now is not None else time.time()
    mtimes: list[float] = []
    places = [(spool, "")]
    if pgdata is not None:
        places.append((Path(pgdata) / "pg_wal" / "archive_status", ".ready"))
    for directory, suffix in places:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(suffix):
                continue
            try:
                mtimes.append(entry.stat().st_mtime)
            except OSError:
                continue
    return WalBacklog(len(mtimes), round(max(0.0, now - min(mtimes)), 1) if mtimes else 0.0)
