"""WAL archiving: push (archive_command), fetch with prefetch (restore_command), verify."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifeboat.assets.postgres.walnames import (
    Segment,
    format_lsn,
    is_history,
    parse_history,
    parse_lsn,
    segment_of,
)
from lifeboat.errors import IntegrityError, LifeboatError, NotFoundError
from lifeboat.private import FILE_MODE, private_dir, private_opener
from lifeboat.repo import RefInfo, Repository, SnapshotInfo

if TYPE_CHECKING:
    from lifeboat.assets.kind import Expiry
    from lifeboat.repo.local_cache import CacheSeal

PREFETCH = 8


def namespace(asset: str) -> str:
    """The ref namespace of an asset's archived WAL."""
    return f"wal/{asset}"


XLP_LONG_HEADER = 0x0002
# XLogLongPageHeaderData (access/xlog_internal.h): the short header XLogPageHeaderData is
# xlp_magic uint16 @0, xlp_info uint16 @2, xlp_tli uint32 @4, xlp_pageaddr uint64 @8,
# xlp_rem_len uint32 @16, MAXALIGNed to 24 bytes; then xlp_sysid uint64 @24,
# xlp_seg_size uint32 @32, xlp_xlog_blcksz uint32 @36. Native byte order (little-endian
# on every platform lifeboat runs on).
SYSID_OFFSET = 24


def segment_system_identifier(data: bytes) -> int | None:
    """The system identifier in a WAL segment's first (long) page header; None for files
    without one (history, backup labels) or a header that is not a long one."""
    if len(data) < SYSID_OFFSET + 8:
        return None
    info = int.from_bytes(data[2:4], "little")
    if not info & XLP_LONG_HEADER:
        return None
    return int.from_bytes(data[SYSID_OFFSET : SYSID_OFFSET + 8], "little")


def asset_system_identifier(repo: Repository, asset: str) -> int | None:
    """The system identifier recorded by the asset's first base backup that has one."""
    for snap in repo.snapshots(asset):
        value = snap.labels.get("system_identifier")
        if value:
            return int(value)
    return None


def push_segment(
    repo: Repository, asset: str, path: Path, system_identifier: int | None = None, data: bytes | None = None
) -> RefInfo:
    """Archive one WAL file (``data``: its content, already read and checked). Idempotent;
    a different file under an existing name fails. Any timeline is accepted (a promoted
    replica after a failover must keep archiving); a segment of another cluster (another
    system identifier) is refused."""
    if data is None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"WAL file {path} does not exist") from None
    if system_identifier is not None and Segment.parse(path.name[:24]) is not None:
        found = segment_system_identifier(data)
        if found is not None and found != system_identifier:
            raise LifeboatError(
                f"{path.name} belongs to database system {found}, asset {asset} is system "
                f"{system_identifier}: refusing to archive another cluster's WAL",
                hint=f"point this cluster's archive_command at its own asset, not {asset}",
                exit_code=1,
            )
    labels = {"kind": _kind(path.name)}
    if is_history(path.name):
        labels.update(history_labels(data))
    return repo.put_ref(namespace(asset), path.name, data, labels=labels)


def history_labels(data: bytes) -> dict[str, str]:
    """A history file's parent and fork point, readable by the writer that archived it and
    the recovery side without reading the content, so `wal verify` and `status` can build
    the timeline tree (on another writer's host that timeline's parent is unknown)."""
    rows = parse_history(data.decode(errors="replace"))
    if not rows:
        return {}
    parent, switch = rows[-1]
    return {"parent": str(parent), "switch_lsn": format_lsn(switch)}


def _kind(name: str) -> str:
    if is_history(name):
        return "history"
    if name.endswith(".partial"):
        return "partial"
    if name.endswith(".backup"):
        return "backup-label"
    return "segment"


def _write_atomically(dest: Path, data: bytes) -> None:
    """0600 like PostgreSQL's own pg_wal files, durable before it is visible."""
    tmp = dest.with_name(f".{dest.name}.lifeboat")
    with open(tmp, "wb", opener=private_opener) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, dest)


def fetch_segment(repo: Repository, asset: str, name: str, dest: Path, spool: Path | None) -> bool:
    """Restore one WAL file to ``dest``; False when the archive does not have it. A
    prefetched copy in ``spool`` (the state dir) is used only when its tag holds: a file
    planted there would otherwise be replayed."""
    if spool is not None and (spool / name).exists():
        try:
            data = repo.cache_seal.open(_prefetch_name(asset, name), (spool / name).read_bytes())
            (spool / name).unlink(missing_ok=True)
        except OSError:  # taken meanwhile by another restore_command: fetch it from the archive
            data = None
        if data is not None:
            _write_atomically(dest, data)
            return True
    try:
        ref = repo.get_ref(namespace(asset), name)
    except NotFoundError:
        return False
    _write_atomically(dest, repo.read_ref(ref))
    return True


def prefetch(repo: Repository, asset: str, name: str, spool: Path) -> None:
    """Fetch the segments after ``name`` into the spool, in parallel, so replay is not
    bound by one round trip per segment."""
    segment = Segment.parse(name)
    if segment is None:
        return
    private_dir(spool)
    wanted = []
    nxt = segment
    for _ in range(PREFETCH):
        nxt = nxt.next()
        if not (spool / nxt.name).exists():
            wanted.append(nxt.name)

    def one(seg_name: str) -> None:
        try:
            ref = repo.get_ref(namespace(asset), seg_name)
            data = repo.cache_seal.seal(_prefetch_name(asset, seg_name), repo.read_ref(ref))
            _write_atomically(spool / seg_name, data)
        except NotFoundError:
            pass

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, wanted))


@dataclass
class Gap:
    """WAL segments missing between two archived ones."""

    timeline: int
    missing: str
    after: str
    breaks: str  # which recovery window is broken


@dataclass
class WalReport:
    """The archive's continuity: gaps, missing start, divergent branches."""

    asset: str
    segments: int = 0
    timelines: list[int] = field(default_factory=list)
    first: str | None = None
    last: str | None = None
    gaps: list[Gap] = field(default_factory=list)
    missing_start: str | None = None
    divergent: list[dict[str, Any]] = field(default_factory=list)  # branches, see timelines.py
    newest_timeline: int | None = None  # the timeline holding the newest archived WAL

    @property
    def ok(self) -> bool:
        """No gap and nothing missing."""
        return not self.gaps and self.missing_start is None


def verify_continuity(names: list[str], base_backups: list[SnapshotInfo], asset: str) -> WalReport:
    """Every segment from the oldest base backup's start to the newest, on every timeline."""
    report = WalReport(asset)
    segments = sorted(s for s in (Segment.parse(n) for n in names) if s is not None)
    report.segments = len(segments)
    if not segments:
        if base_backups:
            report.missing_start = base_backups[0].labels.get("start_wal")
        return report
    report.first, report.last = segments[0].name, segments[-1].name
    by_tli: dict[int, list[Segment]] = {}
    for seg in segments:
        by_tli.setdefault(seg.timeline, []).append(seg)
    report.timelines = sorted(by_tli)
    start: Segment | None = None
    if base_backups:
        oldest = base_backups[0]
        start = segment_of(parse_lsn(oldest.labels["start_lsn"]), int(oldest.labels.get("timeline", "1")))
    for tli, segs in by_tli.items():
        present = {s.number for s in segs}
        lo = start.number if start is not None and tli == start.timeline else segs[0].number
        for number in range(lo, segs[-1].number + 1):
            if number in present:
                continue
            missing = Segment(tli, number)
            if start is not None and missing == start:
                report.missing_start = start.name
            after = max((s for s in segs if s.number < number), default=None)
            report.gaps.append(
                Gap(
                    tli,
                    missing.name,
                    after.name if after else "",
                    f"no point after {after.name if after else 'the base backup start'} on timeline {tli} "
                    "can be reached",
                )
            )
    return report


def verify_archive(repo: Repository, asset: str) -> WalReport:
    """Continuity plus the timeline tree: divergent branches are reported (not gaps)."""
    from lifeboat.assets.postgres.timelines import build_tree

    names = repo.list_ref_names(namespace(asset))
    report = verify_continuity(names, repo.snapshots(asset), asset)
    tree = build_tree(repo, namespace(asset), names)
    if tree.timelines:
        report.newest_timeline = tree.newest().tli
    report.divergent = [d.__dict__ for d in tree.divergences()]
    return report


def divergence_line(d: dict[str, Any]) -> str:
    """A one-line description of a divergent branch."""
    return (
        f"timeline {d['timeline']} is a divergent branch: it forked from timeline {d['parent']} at "
        f"{d['fork_lsn'] or '?'} ({d['fork_segment'] or '?'}) and timeline {d['parent']} kept archiving "
        f"afterwards (up to {d['parent_archived_after_fork']}, {d['parent_last_archived_at']}); "
        f"newest WAL on timeline {d['newest_wal_on']}"
    )


def _prefetch_name(asset: str, name: str) -> str:
    return f"wal-prefetch/{asset}/{name}"


def _spool_name(asset: str, name: str) -> str:
    return f"wal-spool/{asset}/{name}"


def spool_segment(spool: Path, path: Path, asset: str, seal: CacheSeal) -> None:
    """Async archiving, step one: a durable local copy, so archive_command returns at once.
    Tagged (repo/local_cache.py): the drainer pushes and signs only what this step wrote,
    not a file somebody who may write the state dir put there."""
    private_dir(spool)
    data = seal.seal(_spool_name(asset, path.name), path.read_bytes())
    dest = spool / path.name
    if dest.exists():
        if dest.read_bytes() == data:
            return
        raise NotFoundError(f"{path.name} is already spooled with different content")
    _write_atomically(dest, data)
    fd = os.open(spool, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drain_spool(repo: Repository, asset: str, spool: Path, workers: int = 4) -> int:
    """Async archiving, step two: push every spooled file (oldest first), then drop it.

    One drainer at a time (flock on the spool); returns how many files were pushed.
    """
    import fcntl

    private_dir(spool)
    with open(spool / ".drain.lock", "w", opener=private_opener) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # another drainer is at work
        pushed = 0
        sysid = asset_system_identifier(repo, asset)
        while True:
            names = sorted(p.name for p in spool.iterdir() if not p.name.startswith("."))
            if not names:
                return pushed

            def push(name: str) -> None:
                data = repo.cache_seal.open(_spool_name(asset, name), (spool / name).read_bytes())
                if data is None:
                    raise IntegrityError(
                        f"{name} in the WAL spool fails its tag (changed after archive_command "
                        "spooled it, or spooled by an older lifeboat): not archived",
                        hint=f"spooled before an upgrade or not, check it against pg_wal or the "
                        f"primary; if genuine, archive it with 'lifeboat wal push {spool / name}' and "
                        "remove it",
                    )
                push_segment(repo, asset, spool / name, sysid, data)
                (spool / name).unlink()

            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(push, names))
            pushed += len(names)


def expire_wal(repo: Repository, asset: str, *, dry_run: bool = False) -> Expiry:
    """Forget archived and streamed WAL older than the oldest remaining base backup's start:
    replay from any kept backup begins at its own start segment, so nothing earlier can be
    needed. History files stay (they are tiny and describe every timeline). With no base
    backup left, nothing is expired."""
    from lifeboat.assets.kind import Expiry  # the daemon's types: not for a push
    from lifeboat.assets.postgres.stream import stream_namespace

    report = Expiry(asset)
    bases = [s for s in repo.snapshots(asset) if "start_lsn" in s.labels]
    if not bases:
        return report
    starts = [segment_of(parse_lsn(s.labels["start_lsn"]), int(s.labels.get("timeline", "1"))) for s in bases]
    first = min(starts, key=lambda seg: seg.number)
    oldest, report.before = first.number, first.name
    for ns in (namespace(asset), stream_namespace(asset)):
        expired = []
        for name in repo.list_ref_names(ns):
            seg = Segment.parse(name[:24])
            if seg is not None and not is_history(name) and seg.number < oldest:
                expired.append(name)
        if dry_run:
            report.removed += expired
        elif expired:
            removed, locked = repo.forget_refs(ns, expired)
            report.removed += removed
            report.locked += locked
    return report
