"""What `status` adds for a PostgreSQL asset: bad pages in the latest base backup, WAL
archived and streamed since it, a gap that stops replay before the newest WAL, divergent
timelines, and a failing archiver."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lifeboat import clock
from lifeboat.assets.kind import StatusExtras, StatusQuery
from lifeboat.errors import LifeboatError

if TYPE_CHECKING:
    from lifeboat.assets.postgres.timelines import ReplayGap
    from lifeboat.assets.postgres.walnames import Segment
    from lifeboat.repo import Repository, SnapshotInfo


# an async drain pushes several segments at once, so a segment can reach the archive a
# moment after the next one: a gap is reported once the segment past it is this old
GAP_GRACE_S = 60.0


def status_extras(query: StatusQuery) -> StatusExtras:
    """The asset's breaches (in the order status reports them) and its newest WAL time."""
    name, repo = query.name, query.repo
    extras = StatusExtras()
    if query.snapshots:
        _page_verdict(extras, query.snapshots[-1])
    streaming = bool(query.settings.get("stream"))
    wal = wal_findings(repo, name, query.snapshots[-1] if query.snapshots else None, streaming)
    extras.divergent = wal.divergent
    _archiver_verdict(extras, query.probed)
    for d in extras.divergent:
        extras.breaches.append(
            f"divergent WAL branch: timeline {d['timeline']} forked from {d['parent']} at "
            f"{d['fork_lsn'] or '?'} and both archived; newest WAL on timeline {d['newest_wal_on']}"
        )
    if not query.snapshots:
        return extras  # WAL without a base backup to replay it onto restores nothing
    now = query.now or clock.now()
    bases = list(query.snapshots)
    while wal.gap is not None and _gap_lasting(wal, now) and _within_own_wal(wal.gap.missing, bases[-1]):
        # the base itself cannot be made consistent: the one before it is what restores
        base = bases.pop()
        extras.unrestorable.add(base.id)
        extras.breaches.append(
            f"base backup {base.id[:12]} ({base.time.isoformat(timespec='seconds')}) cannot be "
            f"restored: segment {wal.gap.missing.name} of its own WAL is missing"
        )
        if not bases:
            return extras
        wal = wal_findings(repo, name, bases[-1], streaming)
    if wal.gap is not None:
        # replay stops at the gap: WAL archived or streamed after it restores nothing
        extras.newest = wal.reached
        _gap_verdict(extras, wal, now)
        return extras
    # the archive itself, never this host's audit log: a fleet's status host sees what every
    # host pushed, a status of a copy (--repository) sees what the copy holds, and an entry
    # appended to the log proves nothing
    extras.newest = wal.newest
    return extras


def _gap_lasting(wal: WalFindings, now: datetime) -> bool:
    """Whether the gap has lasted GAP_GRACE_S (or its age is unknown): no segment in flight."""
    return wal.gap_since is None or (now - wal.gap_since).total_seconds() >= GAP_GRACE_S


def _within_own_wal(segment: Segment, base: SnapshotInfo) -> bool:
    """Whether ``segment`` is one a base backup needs to be consistent at all (from its start
    to its stop), as opposed to one past it that replay merely stops at."""
    from lifeboat.assets.postgres.walnames import parse_lsn, segment_of

    first = _first_segment(base)
    if first is None or segment.timeline != first.timeline or segment.number < first.number:
        return False
    try:
        last = segment_of(max(parse_lsn(base.labels["stop_lsn"]) - 1, 0), first.timeline)
    except (KeyError, ValueError):
        return segment.number == first.number
    return segment.number <= last.number


def _gap_verdict(extras: StatusExtras, wal: WalFindings, now: datetime) -> None:
    """A breach once the gap has lasted GAP_GRACE_S (or at once when its age is unknown)."""
    assert wal.gap is not None
    if not _gap_lasting(wal, now):
        return
    gap = wal.gap
    if gap.before is None:
        reach = "the latest base backup cannot be replayed at all"
    else:
        when = wal.reached.isoformat(timespec="seconds") if wal.reached else "unknown"
        reach = f"replay stops at {gap.before.name} (archived {when})"
    extras.breaches.append(
        f"WAL gap: segment {gap.missing.name} is missing from the archive; {reach}. "
        "'lifeboat wal verify' lists gaps"
    )


@dataclass(frozen=True)
class ArchiverAnswer:
    """What a server said of its archiver: ``failure``, or None when archiving works."""

    failure: str | None


def archiver_probe(dsn: str) -> ArchiverAnswer | None:
    """``configure.archive_failure`` as status and the daemon ask it: they go on whatever the
    server does, so a query refused (a role without pg_stat_archiver) or a connection lost
    after connecting (a failover) is no verdict (None), as an unreachable server is. `pg
    configure` and `policy check` call ``archive_failure`` itself. psycopg is imported
    here, not with the module: one-shot `status` asks in a child process, and the parent
    never needs it (``AssetKind.status_probe_imports``)."""
    from lifeboat.assets.postgres.configure import archive_failure_on
    from lifeboat.assets.postgres.connection import connect

    try:
        return ArchiverAnswer(archive_failure_on(connect(dsn)))
    except LifeboatError:
        return None


def _archiver_verdict(extras: StatusExtras, probed: object) -> None:
    """A server whose archive_command fails loses its point-in-time recovery silently:
    the audit log only records the pushes that worked. ``probed``: what the kind's status
    probe found; anything but an answer (none in time, none given) is no verdict, and the
    daemon then leaves an archiver alert as it is rather than resolve it."""
    extras.archiver_answered = isinstance(probed, ArchiverAnswer)
    if not isinstance(probed, ArchiverAnswer):
        return
    extras.archive_failure = probed.failure
    if extras.archive_failure is not None:
        extras.breaches.append(extras.archive_failure)


def _page_verdict(extras: StatusExtras, latest: SnapshotInfo) -> None:
    """Degraded while the latest snapshot holds pages that failed their checksum: every
    backup taken since the corruption carries it, so an older snapshot may be the good one."""
    try:
        extras.bad_pages = int(latest.labels["bad_pages"])
    except (KeyError, ValueError):
        return
    if extras.bad_pages:
        where = latest.labels.get("bad_page_blocks", "")
        detail = f" ({where})" if where else ""
        extras.breaches.append(
            f"degraded: {extras.bad_pages} bad page(s) in snapshot {latest.short_id}{detail}"
        )


@dataclass
class WalFindings:
    """What the archive's file names say of an asset's recoverability."""

    divergent: list[dict[str, Any]] = field(default_factory=list)  # see timelines.py
    newest: datetime | None = None  # when the newest WAL file reached the archive
    gap: ReplayGap | None = None  # the first segment replay from the latest base lacks
    reached: datetime | None = None  # with a gap: when the last segment replay reaches was stored
    gap_since: datetime | None = None  # with a gap: when the first segment past it was stored


def wal_findings(repo: Repository, asset: str, latest: SnapshotInfo | None, streaming: bool) -> WalFindings:
    """Divergent timelines, the newest WAL a restore of the latest base backup can replay
    (archived, or streamed when the asset streams: a restore takes streamed files for what
    the archive lacks), and the first gap on the way to it."""
    from lifeboat.assets.postgres.timelines import build_tree
    from lifeboat.assets.postgres.wal import namespace

    archive = namespace(asset)
    try:
        names = repo.list_ref_names(archive)
        tree = build_tree(repo, archive, names)
    except LifeboatError:
        return WalFindings()
    if not tree.timelines:
        return WalFindings()
    found = WalFindings([d.__dict__ for d in tree.divergences()], tree.newest().newest_time)
    since = _first_segment(latest)
    if since is None:
        return found
    tli = tree.replay_timeline(since)
    archived = _segment_numbers(names)
    held = {t: set(numbers) for t, numbers in archived.items()}
    stream = _stream(repo, asset) if streaming else None
    until = None
    if stream is not None:
        for t, numbers in stream.segments.items():
            held.setdefault(t, set()).update(numbers)
        partial = stream.partial
        if partial is not None and partial.timeline == tli and partial.number > max(archived.get(tli, {-1})):
            until = partial.number  # being written: what is before it must all be there
            held.setdefault(tli, set()).add(until)

    def stored_at(seg: Segment | None, first_version: bool = False) -> datetime | None:
        """When a segment was stored: archived, streamed whole, or (the one being streamed)
        its newest partial version, or its first when ``first_version``."""
        if seg is None:
            return None
        if seg.number in archived.get(seg.timeline, set()):
            ns, name = archive, seg.name
        elif stream is None:
            return None
        elif seg == stream.partial and seg.number not in stream.segments.get(seg.timeline, set()):
            if not first_version:
                return stream.partial_time
            ns, name = stream.namespace, stream.partial_first or seg.name
        else:
            ns, name = stream.namespace, seg.name
        try:
            return repo.get_ref(ns, name).time
        except LifeboatError:
            return None

    found.gap = tree.first_gap(tli, since, held, until)
    if found.gap is None:
        # the last segment replay reads, never a history file's time: right after a failover
        # the new timeline's history is archived before its first segment
        found.newest = stored_at(tree.replay_end(tli, since, until))
        return found
    found.reached = stored_at(found.gap.before)
    # a segment still being streamed past the gap: how long the gap has lasted is told by
    # its first version, not its newest (refreshed at every flush)
    found.gap_since = stored_at(found.gap.after, first_version=True)
    if found.gap.after is None and found.gap.missing.timeline != tli and tli in tree.timelines:
        # missing before a fork with nothing of the new timeline yet: the old primary's last
        # pushes may be in flight since the promotion
        found.gap_since = tree.timelines[tli].created
    return found


@dataclass
class _Streamed:
    """What the stream namespace holds: completed segments and the newest partial."""

    namespace: str
    segments: dict[int, set[int]]
    partial: Segment | None = None  # the segment of the newest partial version
    partial_time: datetime | None = None  # its ref's signed time, not the stamp in its name
    partial_first: str | None = None  # the ref name of that segment's first partial version


def _stream(repo: Repository, asset: str) -> _Streamed:
    # stream.py imports psycopg, which status's parent process never needs without streaming
    from lifeboat.assets.postgres.stream import PARTIAL, newest_stream_name, stream_namespace
    from lifeboat.assets.postgres.walnames import Segment

    namespace = stream_namespace(asset)
    names = repo.list_ref_names(namespace)
    found = _Streamed(namespace, _segment_numbers(names))
    newest = newest_stream_name(names)
    if newest is None:
        return found
    segment = newest.split(PARTIAL, 1)[0]
    found.partial = Segment.parse(segment)
    found.partial_first = min((n for n in names if n.startswith(segment + PARTIAL + ".")), default=newest)
    try:
        found.partial_time = repo.get_ref(namespace, newest).time
    except LifeboatError:
        found.partial = None
    return found


def _first_segment(base: SnapshotInfo | None) -> Segment | None:
    """The segment a base backup's replay starts from (None: not recorded)."""
    from lifeboat.assets.postgres.walnames import parse_lsn, segment_of

    if base is None or "start_lsn" not in base.labels:
        return None
    try:
        return segment_of(parse_lsn(base.labels["start_lsn"]), int(base.labels.get("timeline", "1")))
    except ValueError:
        return None


def _segment_numbers(names: list[str]) -> dict[int, set[int]]:
    """Timeline -> numbers of the whole segments among ref names."""
    from lifeboat.assets.postgres.walnames import Segment

    held: dict[int, set[int]] = {}
    for name in names:
        seg = Segment.parse(name)
        if seg is not None:
            held.setdefault(seg.timeline, set()).add(seg.number)
    return held
