"""The archive's timeline tree: which timeline forked from which, where, and who kept
archiving afterwards.

A promoted copy of a cluster starts a new timeline. After a real failover the old
timeline stops archiving; when its parent *keeps archiving after the fork*, the new
timeline is a divergent branch (a staging clone, or split brain) and must never be
followed merely because its number is higher. Every choice made here names its reason, so
a restore can say which branch it followed and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lifeboat.assets.postgres.walnames import (
    HISTORY_RE,
    Segment,
    format_lsn,
    parse_history,
    parse_lsn,
    segment_of,
)
from lifeboat.errors import ConfigError, LifeboatError
from lifeboat.repo import Repository, SnapshotInfo

if TYPE_CHECKING:
    from lifeboat.assets.kind import RestoreRequest


@dataclass
class Timeline:
    """One timeline of the archive: its parent, fork point and newest WAL."""

    tli: int
    parent: int | None = None
    fork_lsn: int | None = None  # where it left its parent (from the history file)
    fork_segment: int | None = None  # segment number of the fork on the parent
    created: datetime | None = None  # when its history file was archived
    first: Segment | None = None
    last: Segment | None = None
    newest_time: datetime | None = None  # when its newest WAL file was archived
    divergent: bool = False


@dataclass
class Divergence:
    """A timeline whose parent kept archiving after it forked."""

    timeline: int
    parent: int
    fork_lsn: str | None
    fork_segment: str | None
    branch_created: str | None
    branch_last: str | None
    parent_archived_after_fork: str  # the parent's newest segment, archived after the fork
    parent_last_archived_at: str
    newest_wal_on: int  # which of the two holds the newest archived WAL


@dataclass
class Choice:
    """The timeline a restore follows, and why."""

    timeline: int
    reason: str
    path: list[int] = field(default_factory=list)
    divergent: list[Divergence] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The choice as JSON."""
        return {
            "followed": self.timeline,
            "reason": self.reason,
            "path": self.path,
            "divergent": [d.__dict__ for d in self.divergent],
        }


@dataclass(frozen=True)
class ReplayGap:
    """The first WAL segment that replay from a base backup towards a timeline's newest
    WAL would need and the archive lacks."""

    missing: Segment
    before: Segment | None  # the last segment replay reaches (None: it stops at once)
    after: Segment | None  # the first segment held past the gap (None: unknown)


@dataclass
class TimelineTree:
    """The archive's timelines and how they branch."""

    timelines: dict[int, Timeline] = field(default_factory=dict)

    def children(self, tli: int) -> list[Timeline]:
        """The timelines forked from one."""
        return [t for t in self.timelines.values() if t.parent == tli]

    def path(self, tli: int) -> list[int]:
        """Root .. tli through the parents (a cycle in damaged history files stops it)."""
        chain = [tli]
        while (parent := self.timelines[chain[-1]].parent) is not None and parent in self.timelines:
            if parent in chain:
                break
            chain.append(parent)
        return chain[::-1]

    def root_of(self, tli: int) -> int:
        """The first timeline of the tree."""
        return self.path(tli)[0] if tli in self.timelines else tli

    def divergences(self) -> list[Divergence]:
        """Branches whose parent kept archiving after the fork."""
        found = []
        for t in sorted(self.timelines.values(), key=lambda t: t.tli):
            if not t.divergent or t.parent is None:
                continue
            parent = self.timelines[t.parent]
            assert parent.last is not None and parent.newest_time is not None
            newer = t.tli if t.newest_time and t.newest_time > parent.newest_time else parent.tli
            found.append(
                Divergence(
                    t.tli,
                    parent.tli,
                    format_lsn(t.fork_lsn) if t.fork_lsn is not None else None,
                    Segment(parent.tli, t.fork_segment).name if t.fork_segment is not None else None,
                    t.created.isoformat(timespec="seconds") if t.created else None,
                    t.last.name if t.last else None,
                    parent.last.name,
                    parent.newest_time.isoformat(timespec="seconds"),
                    newer,
                )
            )
        return found

    def newest(self) -> Timeline:
        """The timeline holding the newest archived WAL (ties: the lower number, the original)."""
        dated = [t for t in self.timelines.values() if t.newest_time is not None]
        if not dated:
            return self.timelines[min(self.timelines)]
        return max(dated, key=lambda t: (t.newest_time, -t.tli))

    def replay_timeline(self, since: Segment) -> int:
        """The timeline a restore of the base backup whose WAL starts at ``since`` reaches
        with --latest: the one holding the newest WAL when the base can reach it (it is on
        the base's timeline path and the base started before each fork), else the base's
        own."""
        if not self.timelines:
            return since.timeline
        newest = self.newest().tli
        return newest if self._replay_ranges(newest, since) is not None else since.timeline

    def first_gap(
        self, tli: int, since: Segment, held: dict[int, set[int]], until: int | None = None
    ) -> ReplayGap | None:
        """The first segment missing from ``held`` (timeline -> segment numbers) on the way
        from ``since`` (a base backup's first segment) to ``tli``'s newest (or to segment
        ``until`` of ``tli``, when further: what streaming holds), along the timeline path.
        None when nothing is missing or the base cannot reach ``tli`` (see
        ``replay_timeline``). The segment holding a fork is the child's: the parent's copy
        ends at the switch point, or goes on down the parent's own branch."""
        if since.timeline not in self.timelines:
            return ReplayGap(since, None, None)  # not even the base's first segment
        ranges = self._replay_ranges(tli, since)
        if not ranges:
            return None
        if until is not None and until > ranges[-1][2]:
            ranges[-1] = (ranges[-1][0], ranges[-1][1], until)
        # replay reads consecutive segment numbers; only the timeline changes at each fork
        along: list[Segment] = []  # the held ones in replay order, never the whole range:
        for timeline, lo, hi in ranges:  # a forged name may be far ahead
            numbers = sorted(n for n in held.get(timeline, ()) if lo <= n <= hi)
            along += [Segment(timeline, n) for n in numbers]
        before: Segment | None = None
        expected = since.number
        for seg in along:
            if seg.number != expected:
                return ReplayGap(Segment(_timeline_at(ranges, expected), expected), before, seg)
            before, expected = seg, expected + 1
        if expected <= ranges[-1][2]:
            return ReplayGap(Segment(_timeline_at(ranges, expected), expected), before, None)
        return None

    def _replay_ranges(self, tli: int, since: Segment) -> list[tuple[int, int, int]] | None:
        """(timeline, first, last segment number) that replay from ``since`` to ``tli``'s
        newest WAL reads, in order; None when it cannot get there."""
        path = self._path_from(since.timeline, tli)
        if path is None:
            return None
        ranges: list[tuple[int, int, int]] = []
        lo = since.number
        for i, timeline in enumerate(path):
            if i + 1 < len(path):
                child = self.timelines[path[i + 1]]
                fork = child.fork_segment
                if fork is None and child.first is not None:
                    fork = child.first.number
                if fork is None or fork < lo:  # a base taken after the fork cannot follow it
                    return None
                hi = fork - 1
            else:
                last = self.timelines[timeline].last if timeline in self.timelines else None
                hi = last.number if last is not None else lo - 1
            ranges.append((timeline, lo, hi))
            lo = hi + 1
        return ranges

    def _path_from(self, base: int, tli: int) -> list[int] | None:
        """The timelines from ``base`` to ``tli``. A root whose parent is not known (its
        history file is sealed for another writer of the asset, as after a failover to a
        standby's host) is taken to have forked at its first segment from the highest
        timeline below it that is no divergent branch, as ``_guess_parent`` takes one whose
        history never arrived."""
        if tli not in self.timelines:
            return [tli] if tli == base else None
        path = self.path(tli)
        ours = set(self.path(base)) if base in self.timelines else {base}
        while base not in path and path[0] > base and self.timelines[path[0]].parent is None:
            # never through a divergent branch (a staging clone's timeline), or one forked
            # from such, unless the base itself is on it
            below = [t for t in self.timelines if t < path[0] and t not in path and self._followable(t, ours)]
            if not below:
                return [base, *path]
            path = [*self.path(max(below)), *path]
        return path[path.index(base) :] if base in path else None

    def _followable(self, tli: int, ours: set[int]) -> bool:
        """Whether ``tli`` lies on no divergent branch but the base's own."""
        return all(t in ours or not self.timelines[t].divergent for t in self.path(tli))

    def replay_end(self, tli: int, since: Segment, until: int | None = None) -> Segment | None:
        """The last segment replay from ``since`` to ``tli`` reads when nothing is missing
        (see ``first_gap``): the end of the last timeline on the way that holds one. None
        when the base cannot reach ``tli`` or nothing lies past its start."""
        ranges = self._replay_ranges(tli, since) or []
        if ranges and until is not None and until > ranges[-1][2]:
            ranges[-1] = (ranges[-1][0], ranges[-1][1], until)
        ends = [Segment(timeline, hi) for timeline, lo, hi in ranges if hi >= lo]
        return ends[-1] if ends else None

    def main_line(self, root: int, may_follow: Any) -> int:
        """From ``root``, follow failovers (never divergent branches) while ``may_follow``."""
        current = root
        while True:
            nxt = [c for c in self.children(current) if not c.divergent and may_follow(c)]
            if not nxt:
                return current
            current = max(nxt, key=lambda t: (t.newest_time or datetime.min.replace(tzinfo=UTC), t.tli)).tli

    def wants(self, target: int, base_start: Segment) -> Any:
        """A predicate on WAL file names: only the chosen timeline path's files."""
        path = self.path(target) if target in self.timelines else [target]
        upto: dict[int, int | None] = {}
        since: dict[int, int] = {}
        for i, tli in enumerate(path):
            child = self.timelines.get(path[i + 1]) if i + 1 < len(path) else None
            upto[tli] = child.fork_segment if child is not None else None
            since[tli] = base_start.number
        histories = {f"{tli:08X}.history" for tli in path}

        def wanted(name: str) -> bool:
            if HISTORY_RE.match(name):
                return name in histories
            seg = Segment.parse(name[:24])
            if seg is None or seg.timeline not in upto or seg.number < since[seg.timeline]:
                return False
            limit = upto[seg.timeline]
            return limit is None or seg.number <= limit

        return wanted


def _timeline_at(ranges: list[tuple[int, int, int]], number: int) -> int:
    """The timeline replay reads segment ``number`` from."""
    return next((t for t, lo, hi in ranges if lo <= number <= hi), ranges[-1][0])


def build_tree(repo: Repository, namespace: str, names: list[str] | None = None) -> TimelineTree:
    """The tree from the archive's file names, its history files and the archive time of
    each timeline's newest file (one ref read per history file and per timeline)."""
    names = repo.list_ref_names(namespace) if names is None else names
    tree = TimelineTree()
    for name in names:
        seg = Segment.parse(name)
        if seg is None:
            continue
        t = tree.timelines.setdefault(seg.timeline, Timeline(seg.timeline))
        t.first = seg if t.first is None or seg < t.first else t.first
        t.last = seg if t.last is None or seg > t.last else t.last
    for name in names:
        match = HISTORY_RE.match(name)
        if match:
            tli = int(match.group(1), 16)
            _read_history(repo, namespace, name, tree.timelines.setdefault(tli, Timeline(tli)))
    for tli, t in sorted(tree.timelines.items()):
        if t.created is None and t.first is not None and tli > min(tree.timelines):
            _guess_parent(repo, namespace, tree, t)
        if t.last is not None:
            t.newest_time = repo.get_ref(namespace, t.last.name).time
        if t.created is not None:
            t.newest_time = max(t.newest_time, t.created) if t.newest_time else t.created
    for t in tree.timelines.values():
        _mark_divergent(tree, t)
    return tree


def _guess_parent(repo: Repository, namespace: str, tree: TimelineTree, t: Timeline) -> None:
    """WAL of a timeline whose history file never reached the archive (archiving switched
    on after the promotion): its parent is taken to be the next lower timeline and its fork
    to be its first archived segment."""
    assert t.first is not None
    t.parent = max(tli for tli in tree.timelines if tli < t.tli)
    t.fork_segment = t.first.number
    t.created = repo.get_ref(namespace, t.first.name).time


def _read_history(repo: Repository, namespace: str, name: str, t: Timeline) -> None:
    ref = repo.get_ref(namespace, name)
    t.created = ref.time
    if not ref.opened:  # archived by another writer of the asset: sealed for it (and the recovery side)
        return  # parent unknown here, rather than a guess that would draw a wrong tree
    if "parent" in ref.labels:
        t.parent = int(ref.labels["parent"])
        t.fork_lsn = parse_lsn(ref.labels["switch_lsn"]) if ref.labels.get("switch_lsn") else None
    else:
        try:  # archived before lifeboat labelled history files: needs the recovery key
            rows = parse_history(repo.read_ref(ref).decode(errors="replace"))
        except LifeboatError:
            rows = []
        if rows:
            t.parent, t.fork_lsn = rows[-1]
        else:
            t.parent = int(name[:8], 16) - 1 or None
    if t.parent is not None and t.fork_lsn is not None:
        t.fork_segment = segment_of(t.fork_lsn, t.parent).number


def _mark_divergent(tree: TimelineTree, t: Timeline) -> None:
    if t.parent is None or t.parent not in tree.timelines or t.created is None:
        return
    parent = tree.timelines[t.parent]
    if parent.last is None or parent.newest_time is None:
        return
    fork = t.fork_segment if t.fork_segment is not None else (t.first.number if t.first else None)
    if fork is None:
        return
    # The parent wrote past the fork and archived it after the branch existed: two
    # clusters were writing at once. (A real failover's old primary has stopped.)
    t.divergent = parent.last.number >= fork and parent.newest_time > t.created


def choose_timeline(tree: TimelineTree, request: RestoreRequest, bases: list[SnapshotInfo]) -> Choice:
    """The timeline a restore follows: --timeline; for --latest the branch with the newest
    archived WAL; for a target the main line (failovers, never divergent branches) as it
    stood at that point."""
    base_tli = int(bases[-1].labels.get("timeline", "1")) if bases else 1
    if base_tli not in tree.timelines:
        tree.timelines[base_tli] = Timeline(base_tli)
    root = tree.root_of(base_tli)
    divergent = tree.divergences()
    forced = request.postgres.timeline
    if forced is not None:
        if int(forced) not in tree.timelines:
            known = ", ".join(str(t) for t in sorted(tree.timelines))
            raise ConfigError(f"timeline {forced} is not in the archive", hint=f"timelines: {known}")
        tli, reason = int(forced), "--timeline given"
    elif request.at is not None:
        at: datetime = request.at
        tli = tree.main_line(root, lambda c: c.created is not None and c.created <= at)
        reason = f"timeline current at {at.isoformat(timespec='seconds')} (failovers followed, not branches)"
    elif request.postgres.lsn:
        lsn = parse_lsn(str(request.postgres.lsn))
        tli = tree.main_line(root, lambda c: c.fork_lsn is not None and c.fork_lsn <= lsn)
        reason = (
            f"timeline holding LSN {request.postgres.lsn} on the main line (failovers followed, not branches)"
        )
    elif request.postgres.xid or request.postgres.name:
        tli = tree.main_line(root, lambda c: True)
        reason = "end of the main line (failovers followed, not divergent branches)"
    else:
        newest = tree.newest()
        tli = newest.tli
        when = newest.newest_time.isoformat(timespec="seconds") if newest.newest_time else "unknown"
        reason = f"holds the newest archived WAL ({newest.last.name if newest.last else 'history'}, {when})"
        if any(d.timeline == tli for d in divergent):
            reason += "; WARNING: this is a divergent branch, pass --timeline to follow another"
    return Choice(tli, reason, tree.path(tli), divergent)


def bases_on_path(tree: TimelineTree, tli: int, bases: list[SnapshotInfo]) -> list[SnapshotInfo]:
    """Base backups replay can start from to reach ``tli``: on its path, before each fork."""
    path = tree.path(tli) if tli in tree.timelines else [tli]
    usable = []
    for base in bases:
        btli = int(base.labels.get("timeline", "1"))
        if btli not in path:
            continue
        i = path.index(btli)
        if i + 1 < len(path):
            child = tree.timelines[path[i + 1]]
            stop = base.labels.get("stop_lsn")
            if child.fork_lsn is not None and stop and parse_lsn(stop) > child.fork_lsn:
                continue
        usable.append(base)
    return usable


def added_by_branch(before: set[str], after: set[str], branch_tli: int) -> list[str]:
    """Archive files that appeared while a restored copy ran and that only that copy can
    have written: its timeline's history and segments (or later ones), and .partial files
    (written by a cluster that promoted). Production's own new segments are not counted."""
    added = []
    for name in sorted(after - before):
        match = HISTORY_RE.match(name)
        tli = int(match.group(1), 16) if match else None
        seg = Segment.parse(name[:24])
        if seg is not None and tli is None:
            tli = seg.timeline
        if name.endswith(".partial") or (tli is not None and tli >= branch_tli):
            added.append(name)
    return added
