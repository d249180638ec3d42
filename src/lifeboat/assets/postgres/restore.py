"""Point-in-time restore: base backup + staged WAL + recovery settings, optionally started
and checked (pg_amcheck, the policy's SQL checks). The step timings are the measured RTO."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifeboat.assets.postgres.backup import EXCLUDED_DIR_CONTENTS
from lifeboat.assets.postgres.cluster import (
    PgCluster,
    chown_tree,
    find_pg_bin,
    free_port,
    port_in_use,
    run_as_user,
)
from lifeboat.assets.postgres.connection import connect
from lifeboat.assets.postgres.promote import wait_writable
from lifeboat.assets.postgres.quoting import check_lsn, check_xid, pg_string, setting
from lifeboat.assets.postgres.stager import WalStager, remove_stale, restore_command, spool_in_use
from lifeboat.assets.postgres.stream import stream_namespace, streamed_files
from lifeboat.assets.postgres.timelines import bases_on_path, build_tree, choose_timeline
from lifeboat.assets.postgres.wal import namespace, verify_continuity
from lifeboat.assets.postgres.walnames import (
    SEGMENT_SIZE,
    Segment,
    format_lsn,
    is_history,
    parse_lsn,
    segment_of,
)
from lifeboat.errors import ConfigError, LifeboatError, NotFoundError, RestoreError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo import Repository, SnapshotInfo, target_is_empty
from lifeboat.targetdir import DISK_FULL, ShortSpace, free_space, readable_size, refuse_short_space

if TYPE_CHECKING:
    from lifeboat.assets.kind import RestoreRequest
    from lifeboat.assets.postgres.model import PostgresAsset
    from lifeboat.policy import Policy

LAST_TXN = re.compile(r"last completed transaction was at log time (\S+ \S+)")
REDO_DONE = re.compile(r"redo done at (\S+)")
TARGET_NOT_REACHED = "recovery ended before configured recovery target was reached"


def _target_not_reached(target: str, log: str) -> RestoreError:
    """PostgreSQL's shutdown lines, as the one fact they carry: the archive ends first."""
    txn = LAST_TXN.findall(log)
    redo = REDO_DONE.findall(log)
    where = ", ".join(
        part
        for part in (
            f"last replayed transaction at {txn[-1]}" if txn else "",
            f"WAL replayed to LSN {redo[-1]}" if redo else "",
        )
        if part
    )
    return RestoreError(
        f"recovery target {target} is beyond the end of the archived WAL" + (f" ({where})" if where else ""),
        hint="restore --latest for everything archived, or an earlier target",
    )


@dataclass
class CheckResult:
    """One check run on a restored cluster."""

    name: str
    ok: bool
    detail: str


@dataclass
class PgRestoreResult:
    """What a PostgreSQL restore did (its fields are the `--json` report)."""

    ok: bool
    asset: str
    snapshot: str
    target: str
    recovery_target: str
    steps: dict[str, float] = field(default_factory=dict)
    wal_segments: int = 0
    wal_first: str | None = None  # the WAL range staged for replay (drill evidence records it)
    wal_last: str | None = None
    streamed_wal: list[str] = field(default_factory=list)  # files the archive lacked, from the stream
    port: int | None = None
    started: bool = False
    recovered_to: str | None = None  # last completed transaction replayed (server log)
    archiving: str = "off"
    timeline: dict[str, Any] = field(default_factory=dict)  # which branch was followed, and why
    standby: bool = False
    archive_settings_disabled: list[str] = field(default_factory=list)
    links_not_restored: list[str] = field(default_factory=list)  # "name -> where it pointed"
    inherited_settings_cleared: list[str] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (`lifeboat restore --json`)."""
        return asdict(self)


def choose_base_backup(
    repo: Repository, asset: str, request: RestoreRequest, candidates: list[SnapshotInfo] | None = None
) -> SnapshotInfo:
    """The base backup for the recovery target, on the followed timeline."""
    if request.snapshot_id:
        chosen = repo.find_snapshot(asset, snapshot_id=request.snapshot_id)
        if candidates is not None and chosen.id not in {c.id for c in candidates}:
            raise RestoreError(
                f"base backup {chosen.id[:12]} is not on the timeline this restore follows",
                hint="pass --timeline with the backup's timeline, or another --snapshot",
            )
        return chosen
    snaps = repo.snapshots(asset) if candidates is None else candidates
    if not snaps:
        raise NotFoundError(f"asset {asset} has no base backups", hint=f"run 'lifeboat backup {asset}'")
    at: datetime | None = request.at
    if at is not None:
        before = [s for s in snaps if s.time <= at]
        if not before:
            raise RestoreError(
                f"target time {at.isoformat(timespec='seconds')} is before the oldest base backup",
                hint=f"the oldest base backup finished at {snaps[0].time.isoformat(timespec='seconds')}",
            )
        return before[-1]
    if request.postgres.lsn:
        target = parse_lsn(request.postgres.lsn)
        before = [s for s in snaps if parse_lsn(s.labels["stop_lsn"]) <= target]
        if not before:
            raise RestoreError(f"LSN {request.postgres.lsn} is before the end of the oldest base backup")
        return before[-1]
    return snaps[-1]


def validate_targets(request: RestoreRequest) -> RestoreRequest:
    """--xid and --lsn reach postgresql.auto.conf: only well-formed values do."""
    pg = request.postgres
    xid = check_xid(str(pg.xid)) if pg.xid else pg.xid
    lsn = check_lsn(str(pg.lsn)) if pg.lsn else pg.lsn
    return dataclasses.replace(request, postgres=dataclasses.replace(pg, xid=xid, lsn=lsn))


def recovery_settings(
    request: RestoreRequest, spool: Path, timeline: str = "latest"
) -> tuple[list[str], str]:
    """The recovery settings for the target and a description of it."""
    # The WAL is staged into the spool by a background stager while PostgreSQL replays;
    # the restore_command is the spool's shell script (no interpreter start per segment):
    # it hard-links a staged file, waits for a pending one, exits 1 for a file the archive
    # lacks (the end of the archive) and fatally when staging failed (see stager.py).
    fetch = restore_command(spool)
    lines = [
        setting("restore_command", fetch),
        setting("recovery_target_timeline", timeline),
    ]
    if not request.postgres.standby:
        lines.append(setting("recovery_target_action", "promote"))
    if request.at is not None:
        at: datetime = request.at
        lines.append(setting("recovery_target_time", at.isoformat()))
        target = f"time {at.isoformat(timespec='seconds')}"
    elif request.postgres.lsn:
        lines.append(setting("recovery_target_lsn", str(request.postgres.lsn)))
        target = f"LSN {request.postgres.lsn}"
    elif request.postgres.xid:
        lines.append(setting("recovery_target_xid", str(request.postgres.xid)))
        target = f"xid {request.postgres.xid}"
    elif request.postgres.name:
        lines.append(setting("recovery_target_name", str(request.postgres.name)))
        target = f"restore point {request.postgres.name}"
    else:
        target = "latest"
    return lines, target


ARCHIVE_SETTING = re.compile(r"^\s*(archive_mode|archive_command|archive_library)\b", re.IGNORECASE)


def disable_archiving(target: Path) -> list[str]:
    """Comment out the archive settings the backup carried (postgresql.conf and the
    backup's postgresql.auto.conf) and return the lines that switch archiving off. A
    restored copy that kept production's archive_command would push its own timeline into
    production's archive, and the next restore to 'latest' would follow it."""
    disabled = []
    for name in ("postgresql.conf", "postgresql.auto.conf"):
        path = target / name
        if not path.exists():
            continue
        lines = path.read_text().splitlines()
        changed = False
        for i, line in enumerate(lines):
            match = ARCHIVE_SETTING.match(line)
            if match:  # the setting's name only: an archive_command may carry credentials
                disabled.append(f"{name}: {match.group(1).lower()}")
                lines[i] = "# disabled by lifeboat restore (archiving off): " + line
                changed = True
        if changed:
            path.write_text("\n".join(lines) + "\n")
    return disabled


ARCHIVING_OFF = ["archive_mode = off", "archive_command = ''", "archive_library = ''"]
# Settings a backup carries that reach out of the restored copy: a standby's (or a promoted
# primary's) connection to its primary and slot, which a copy replaying in standby mode would
# use to stream from production, holding its slot or becoming its synchronous standby; and
# commands run against production's paths when replay cleans the archive or ends.
REACHING_OUT = ("primary_conninfo", "primary_slot_name", "archive_cleanup_command", "recovery_end_command")
REACHING_OUT_SETTING = re.compile(rf"^\s*({'|'.join(REACHING_OUT)})\s*=\s*(.*)$", re.IGNORECASE)


def settings_reaching_out(target: Path) -> list[str]:
    """The REACHING_OUT settings the backup's configuration gives a value (names only: a
    connection string may carry a password)."""
    found = set()
    for name in ("postgresql.conf", "postgresql.auto.conf"):
        path = target / name
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                match = REACHING_OUT_SETTING.match(line)
                if match and match.group(2).split("#", 1)[0].strip() not in ("", "''"):
                    found.add(match.group(1).lower())
    return sorted(found)


@dataclass
class WalPlan:
    """What the stager will fetch: spool file name -> (namespace, ref name)."""

    sources: dict[str, tuple[str, str]]
    segments: int
    missing: list[str]  # segments missing from the archive
    streamed: list[str]  # files taken from the stream


def plan_wal(
    repo: Repository,
    asset: str,
    base: SnapshotInfo,
    wanted: Callable[[str], bool] | None = None,
    names: list[str] | None = None,
) -> WalPlan:
    """Every WAL file replay may need: the archive's, then streamed files for what the
    archive lacks; only the chosen timeline path's files (``wanted``), so PostgreSQL
    cannot wander onto another branch."""
    start = segment_of(parse_lsn(base.labels["start_lsn"]), int(base.labels.get("timeline", "1")))
    sources: dict[str, tuple[str, str]] = {}  # file name -> (namespace, ref name)
    segment_names = []
    for name in repo.list_ref_names(namespace(asset)) if names is None else names:
        if wanted is not None and not wanted(name):
            continue
        seg = Segment.parse(name)
        if seg is not None and seg.timeline >= start.timeline and seg.number >= start.number:
            sources[name] = (namespace(asset), name)
            segment_names.append(name)
        elif is_history(name):
            sources[name] = (namespace(asset), name)
    streamed = _streamed_beyond_archive(repo, asset, start, set(sources))
    if wanted is not None:
        streamed = {n: src for n, src in streamed.items() if wanted(n[:24] if n.endswith(".partial") else n)}
    sources.update(streamed)
    streamed_segments = [n for n in streamed if Segment.parse(n) is not None]
    report = verify_continuity(segment_names + streamed_segments, [base], asset)
    missing = ([report.missing_start] if report.missing_start else []) + [g.missing for g in report.gaps]
    return WalPlan(sources, len(segment_names) + len(streamed_segments), missing, sorted(streamed))


def _streamed_beyond_archive(
    repo: Repository, asset: str, start: Segment, archived: set[str]
) -> dict[str, tuple[str, str]]:
    """Streamed files the archive lacks. A partial segment is used only at the end of its
    timeline: replay stops where a partial ends, so it must not hide a later segment."""
    ns = stream_namespace(asset)
    candidates = streamed_files(repo.list_ref_names(ns))
    complete = {Segment.parse(n) for n in archived} | {
        Segment.parse(n) for n, ref in candidates.items() if n == ref
    }
    newest: dict[int, int] = {}
    for seg in complete:
        if seg is not None:
            newest[seg.timeline] = max(newest.get(seg.timeline, -1), seg.number)
    chosen: dict[str, tuple[str, str]] = {}
    for name, ref in candidates.items():
        if name in archived:
            continue
        seg = Segment.parse(name)
        if seg is None:  # a history file
            chosen[name] = (ns, ref)
        elif seg.timeline >= start.timeline and seg.number >= start.number:
            if ref != name and seg.number <= newest.get(seg.timeline, -1):
                continue
            chosen[name] = (ns, ref)
    return chosen


def _prepare_target(target: Path, force: bool, source: Path | None) -> None:
    if source is not None and target.resolve() == Path(source).resolve():
        raise RestoreError(
            f"target {target} is the live source data directory", hint="restore into a new directory"
        )
    pid = target / "postmaster.pid"
    if pid.exists():
        raise RestoreError(
            f"target {target} belongs to a running PostgreSQL (postmaster.pid exists)",
            hint="stop that server first; lifeboat never overwrites a live cluster",
        )
    if not target_is_empty(target):
        if not force:
            raise RestoreError(
                f"target {target} is not empty", hint="choose an empty directory or pass --force"
            )
        _refuse_unrelated_files(target)
        shutil.rmtree(target)


def _tree_size(path: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes of the regular files below ``path`` (0 when absent); links are not followed,
    and a file already in ``seen`` (another name of it) is not counted twice: the WAL a
    stopped copy replayed is hard-linked into its pg_wal from the spool beside it."""
    seen = set() if seen is None else seen
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def _refuse_unrelated_files(target: Path) -> None:
    """--force never deletes files that are not lifeboat's to replace. A data directory
    cannot be merged into (stale relation files would corrupt the restored cluster), so for
    PostgreSQL --force replaces a target only when it is a stopped data directory."""
    if target.is_symlink() or not (target / "PG_VERSION").is_file():
        raise RestoreError(
            f"target {target} is not empty and is not a PostgreSQL data directory: "
            "--force replaces a stopped data directory, never unrelated files",
            hint="restore into an empty directory, or empty this one yourself",
        )


@dataclass(frozen=True)
class ArchiveEnd:
    """Where the WAL a restore can replay ends: the newest segment on the followed
    timelines (archived or streamed), the LSN its end is, and when it was stored."""

    segment: str
    lsn: int
    time: datetime

    def describe(self) -> str:
        """Where the archive ends, for an error line."""
        return (
            f"the archive ends at LSN {format_lsn(self.lsn)} (segment {self.segment}, "
            f"stored {self.time.isoformat(timespec='seconds')})"
        )


def archive_end(
    repo: Repository, asset: str, names: list[str], wanted: Callable[[str], bool] | None
) -> ArchiveEnd | None:
    """The newest point the WAL archive can replay to."""
    candidates: dict[str, tuple[str, str]] = {n: (namespace(asset), n) for n in names}
    stream_ns = stream_namespace(asset)
    for name, ref in streamed_files(repo.list_ref_names(stream_ns)).items():
        candidates.setdefault(name[:24], (stream_ns, ref))
    newest: tuple[int, int, str] | None = None
    for name in candidates:
        seg = Segment.parse(name)
        if seg is None or (wanted is not None and not wanted(name)):
            continue
        if newest is None or (seg.number, seg.timeline) > newest[:2]:
            newest = (seg.number, seg.timeline, name)
    if newest is None:
        return None
    ns, ref = candidates[newest[2]]
    stored = repo.get_ref(ns, ref).time
    return ArchiveEnd(newest[2], (newest[0] + 1) * SEGMENT_SIZE, stored)


def refuse_beyond_archive(
    repo: Repository,
    asset: str,
    request: RestoreRequest,
    names: list[str],
    wanted: Callable[[str], bool] | None,
) -> None:
    """A recovery target the archived WAL cannot reach would start PostgreSQL only for it
    to stop with "recovery ended before configured recovery target was reached": refuse
    it before anything is written. An --at after the newest segment was stored cannot be
    reached (every commit in the archive is older); an --lsn past the newest segment's end
    neither."""
    at: datetime | None = request.at
    lsn = request.postgres.lsn
    if at is None and not lsn:
        return
    end = archive_end(repo, asset, names, wanted)
    if end is None:
        return
    if lsn and parse_lsn(str(lsn)) > end.lsn:
        raise RestoreError(
            f"recovery target LSN {lsn} is beyond the end of the archived WAL: {end.describe()}",
            hint=f"restore to --lsn {format_lsn(end.lsn)} or earlier, or --latest",
        )
    if at is not None and at > end.time:
        raise RestoreError(
            f"recovery target time {at.isoformat(timespec='seconds')} is after the newest archived "
            f"WAL: {end.describe()}",
            hint="restore --latest for everything archived, or an earlier --at",
        )


def _staged_wal_bytes(names: list[str], base: SnapshotInfo, wanted: Callable[[str], bool] | None) -> int:
    """What the WAL spool will hold: every segment from the base backup's start on the
    followed timelines (16 MiB each: the archive stores whole segments)."""
    start = segment_of(parse_lsn(base.labels["start_lsn"]), int(base.labels.get("timeline", "1")))
    count = 0
    for name in names:
        seg = Segment.parse(name)
        if seg is None or (wanted is not None and not wanted(name)):
            continue
        if seg.timeline >= start.timeline and seg.number >= start.number:
            count += 1
    return count * SEGMENT_SIZE


def _check_disk(target: Path, spool: Path, data: int, wal: int) -> None:
    """Refuse up front when the data directory and the WAL spool cannot both fit: on one
    filesystem their sum is what counts (the spool sits beside the target)."""
    free, block = free_space(target)
    spool_free, _ = free_space(spool)
    data += data // 20 + 64 * block  # directories, block rounding, the files restore adds
    if _device(target) == _device(spool):
        if data + wal > free:
            raise RestoreError(
                f"not enough space for the restore into {target}: {readable_size(data + wal)} needed "
                f"({readable_size(data)} data + {readable_size(wal)} WAL staged beside it), "
                f"{readable_size(free)} free",
                hint="free space or restore elsewhere",
            )
        return
    refuse_short_space(target, data, free)
    refuse_short_space(spool, wal, spool_free)


def _device(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return path.stat().st_dev


class _Written:
    """What this restore creates (the data directory's content, the WAL spool), to take
    back when the disk fills: a retry must find nothing of ours in its way."""

    def __init__(self, target: Path, spool: Path) -> None:
        self.target = target
        self.spool = spool
        self.target_existed = target.exists()

    def take_back(self) -> None:
        shutil.rmtree(self.spool, ignore_errors=True)
        if not self.target_existed:
            shutil.rmtree(self.target, ignore_errors=True)
            return
        for child in self.target.iterdir() if self.target.is_dir() else []:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL
    # the base backup's own space check failing after ours passed: another writer took the
    # space meanwhile (the WAL stager is already writing), the same outcome as ENOSPC
    return isinstance(exc, ShortSpace) or (
        isinstance(exc, RestoreError) and exc.message.startswith("no space left")
    )


def run_sql_checks(dsn: str, checks: list[Any], database: str | None = None) -> list[CheckResult]:
    """Each check in its `database`, else in ``database`` (the asset's dsn's dbname: the
    application's tables live there, not in `postgres`)."""
    from psycopg.conninfo import make_conninfo

    results = []
    for check in checks:
        dbname = check.database or database
        try:
            with connect(make_conninfo(dsn, dbname=dbname) if dbname else dsn) as conn:
                row = conn.execute(check.sql).fetchone()
            value = "" if row is None or row[0] is None else str(row[0])
            if isinstance(row[0] if row else None, bool):
                value = "t" if row and row[0] else "f"
            ok = check.expect is None or value == check.expect
            results.append(
                CheckResult(check.name, ok, f"got {value!r}" + ("" if ok else f", expected {check.expect!r}"))
            )
        except Exception as exc:
            results.append(CheckResult(check.name, False, str(exc).strip().splitlines()[0][:200]))
    return results


def dsn_dbname(dsn: str | None) -> str | None:
    """The database a connection string names (None when it names none or is malformed)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        return str(conninfo_to_dict(dsn or "").get("dbname") or "") or None
    except psycopg.ProgrammingError:  # a malformed dsn fails elsewhere, loudly
        return None


def amcheck(cluster: PgCluster) -> CheckResult:
    """Run pg_amcheck on the restored cluster."""
    if not (cluster.pg_bin / "pg_amcheck").exists():
        return CheckResult("pg_amcheck", True, "not installed; skipped")
    proc = cluster.run(
        "pg_amcheck",
        "-h",
        str(cluster.socket_dir),
        "-p",
        str(cluster.port),
        "--all",
        "--install-missing",
        check=False,
        timeout=3600,
    )
    detail = (proc.stdout + proc.stderr).strip().splitlines()
    return CheckResult(
        "pg_amcheck", proc.returncode == 0, detail[0][:200] if detail else "all relations verified"
    )


def socket_dir_of(target: Path) -> Path:
    """Where a restored cluster listens: a socket directory beside its data directory."""
    return Path(f"{target.parent}/.{target.name}.sock")


def restore_postgres(
    policy: Policy,
    asset: PostgresAsset,
    repo: Repository,
    request: RestoreRequest,
    progress: ProgressSink = NO_PROGRESS,
) -> PgRestoreResult:
    """Restore a base backup and stage its WAL; with `start`, run recovery and the checks."""
    target = Path(str(request.target)).absolute()
    request = validate_targets(request)
    started_at = time.monotonic()
    names = repo.list_ref_names(namespace(asset.name))
    tree = build_tree(repo, namespace(asset.name), names)
    bases = [s for s in repo.snapshots(asset.name) if "start_lsn" in s.labels]
    choice = choose_timeline(tree, request, bases)
    base = choose_base_backup(repo, asset.name, request, bases_on_path(tree, choice.timeline, bases))
    base_start = segment_of(parse_lsn(base.labels["start_lsn"]), int(base.labels.get("timeline", "1")))
    wanted = tree.wants(choice.timeline, base_start)
    refuse_beyond_archive(repo, asset.name, request, names, wanted)
    # Everything that can refuse runs before --force removes the old data directory: a
    # refused restore must leave the target as it was.
    port = request.postgres.port
    if request.postgres.start:
        port = port or free_port()
        if port_in_use(port):
            raise RestoreError(f"port {port} is already in use", hint="pass another --port")
    spool = Path(f"{target.parent}/.{target.name}.lifeboat-wal")
    settings, target_desc = recovery_settings(request, spool, str(choice.timeline))
    counted: set[tuple[int, int]] = set()
    replaced = _tree_size(target, counted) if request.force else 0  # freed by the replacement
    _refuse_spool_in_use(spool, target)
    stale = _tree_size(spool, counted)  # a stopped earlier attempt's, removed once nothing refuses
    plan = plan_wal(repo, asset.name, base, wanted, names)
    if plan.missing and target_desc == "latest":
        raise RestoreError(
            f"WAL segment {plan.missing[0]} is missing from the archive; "
            "replay to latest would stop before it",
            hint="restore to an earlier --at/--lsn, or find the segment; 'lifeboat wal verify' lists gaps",
        )
    wal_bytes = _staged_wal_bytes(names, base, wanted)
    _check_disk(target, spool, max(0, base.stats.bytes - replaced), max(0, wal_bytes - stale))
    _prepare_target(target, bool(request.force), asset.pgdata)
    _refuse_spool_in_use(spool, target)  # again: a restore may have started since
    remove_stale(spool)  # the WAL a stopped cluster in the old target would have replayed
    result = PgRestoreResult(True, asset.name, base.id, str(target), target_desc, port=port)
    result.timeline = choice.to_dict()
    staged = sorted(n for n in plan.sources if Segment.parse(n[:24]) is not None)
    result.wal_first, result.wal_last = (staged[0][:24], staged[-1][:24]) if staged else (None, None)
    written = _Written(target, spool)
    stager = WalStager(repo, spool, plan.sources, run_as_user())
    finished = False
    try:
        _restore_with_stager(
            repo, asset, request, base, plan, stager, written, settings, port, result, progress
        )
        finished = True
    finally:  # however the restore ends: no stager thread outlives it, no stale spool
        stager.close(keep_spool=finished and (not result.started or result.standby))
        result.steps["fetch_wal"] = stager.elapsed()
    result.steps["total"] = round(time.monotonic() - started_at, 3)
    result.summary = _summary(result)
    return result


def _refuse_spool_in_use(spool: Path, target: Path) -> None:
    if spool_in_use(spool):
        raise RestoreError(
            f"another restore into {target} holds its WAL spool {spool.name} "
            "(still running, or another OS user's)",
            hint="wait for it to end, or stop it, then run this one again",
        )


def _restore_with_stager(
    repo: Repository,
    asset: PostgresAsset,
    request: RestoreRequest,
    base: SnapshotInfo,
    plan: WalPlan,
    stager: WalStager,
    written: _Written,
    settings: list[str],
    port: int | None,
    result: PgRestoreResult,
    progress: ProgressSink,
) -> None:
    target, spool, target_desc = written.target, written.spool, result.recovery_target

    def fetch_wal() -> tuple[int, list[str], list[str]]:
        stager.start()  # returns at once: the workers stage while the base backup is written
        return plan.segments, plan.missing, plan.streamed

    try:
        inline_tablespaces, missing = _write_base_and_wal(repo, base, target, fetch_wal, result, progress)
        if not request.postgres.start:  # today's contract: the spool is complete on return
            stager.wait()  # here, not in fetch_wal: a Ctrl-C stops it instead of waiting for it
    except BaseException as exc:
        stager.close(keep_spool=False)  # its workers stop writing before the spool is taken back
        written.take_back()  # whatever stopped it, a retry must not find our half in its way
        if not _disk_full(exc):
            raise
        raise RestoreError(
            f"no space left on the filesystem of {target} during the restore; removed the partial "
            f"data directory and the staged WAL ({spool.name})",
            hint="free space or restore elsewhere, then run the restore again",
        ) from None
    archive = bool(request.postgres.archive)
    result.archiving = "on (--archive: inherited archive settings kept)" if archive else "off"
    result.archive_settings_disabled = [] if archive else disable_archiving(target)
    result.inherited_settings_cleared = settings_reaching_out(target)
    socket_dir = socket_dir_of(target)
    with open(target / "postgresql.auto.conf", "a") as fh:
        fh.write("\n# written by lifeboat restore\n" + "\n".join(settings) + "\n")
        if port:
            fh.write(f"port = {int(port)}\n")
        if not archive:
            fh.write("\n".join(ARCHIVING_OFF) + "\n")
        fh.write("".join(f"{name} = ''\n" for name in REACHING_OUT))  # the last setting wins
        if not archive:  # a subscriber's copy would apply from production's publisher, on its slot
            fh.write("max_logical_replication_workers = 0\n")
        if inline_tablespaces:  # directories in pg_tblspc, not symlinks (PostgreSQL 15+)
            fh.write("allow_in_place_tablespaces = on\n")
        # A list setting: the double quotes keep a comma in the path from splitting it.
        socket_list = '"' + str(socket_dir).replace('"', '""') + '"'
        fh.write(f"unix_socket_directories = {pg_string(socket_list)}\n")
        if request.postgres.standby:
            fh.write(STANDBY_PLACEHOLDER)
    result.standby = bool(request.postgres.standby)
    # replay to the end of the archive started here: in standby mode, promoted by lifeboat
    # once every file is staged (no end-of-recovery checkpoint before writes; promote.py)
    fast = bool(request.postgres.start) and not result.standby and target_desc == "latest"
    (target / ("standby.signal" if result.standby or fast else "recovery.signal")).touch()
    socket_dir.mkdir(exist_ok=True)
    cluster = PgCluster(target, port or 5432, socket_dir, find_pg_bin(asset.pg_bin))
    chown_tree(socket_dir, cluster.user)  # the spool's files are the stager's to chown
    if cluster.user and os.stat(target).st_uid == 0:
        # the target the operator named may be a link (/var/lib/postgresql/16/main to a
        # volume): its files were written through it, and the cluster is what it points at
        chown_tree(target.resolve(), cluster.user)

    if request.postgres.start:
        try:
            if stager.failure is not None:  # failed while the base backup was written: no start
                raise stager.failure
            _start_and_check(cluster, asset, result, missing, stager.is_complete if fast else None)
            if result.standby:  # a standby goes on reading the spool after it accepts queries
                stager.wait()
        except BaseException:
            # a failed or interrupted restore leaves no server behind (its spool goes, and
            # nothing would watch it); one the fatal restore_command stopped is stopped already
            failure = stager.failure  # what stopped it, before stopping the server fails more reads
            cluster.stop("immediate")
            if failure is None:
                raise
            if isinstance(failure, LifeboatError):
                raise failure from None
            raise RestoreError(f"staging the WAL failed: {failure}") from None


def _write_base_and_wal(
    repo: Repository,
    base: SnapshotInfo,
    target: Path,
    fetch_wal: Callable[[], tuple[int, list[str], list[str]]],
    result: PgRestoreResult,
    progress: ProgressSink,
) -> tuple[bool, list[str]]:
    """The base backup into ``target`` while the WAL is staged: the two overlap their
    decompression and their writes instead of queueing one behind the other. Returns
    (tablespaces inline, segments missing from the archive)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-stage") as stager:
        staged = stager.submit(fetch_wal)
        t0 = time.monotonic()
        try:
            repo.reader(base).restore_tree(target, force=True, progress=progress)
        except BaseException:
            staged.exception()  # the spool is complete or failed before anyone cleans it up
            raise
        # Tablespaces were captured inline (pg_tblspc/<oid> as directories). The backup's
        # tablespace_map would make PostgreSQL replace them with symlinks to the *source*
        # server's tablespace locations: drop it, so the restore stays self-contained.
        (target / "tablespace_map").unlink(missing_ok=True)
        result.links_not_restored = replace_links(target)
        inline_tablespaces = any((target / "pg_tblspc").glob("*"))
        for name in EXCLUDED_DIR_CONTENTS:
            (target / name).mkdir(mode=0o700, exist_ok=True)
        (target / "pg_wal" / "archive_status").mkdir(mode=0o700, exist_ok=True)
        os.chmod(target, 0o700)
        result.steps["fetch_base"] = round(time.monotonic() - t0, 3)
        result.wal_segments, missing, result.streamed_wal = staged.result()
    return inline_tablespaces, missing


def replace_links(target: Path) -> list[str]:
    """Leave no symbolic link in a restored data directory, as pgBackRest does by default:
    a link's target is the source host's (production's WAL directory, its configuration
    under /etc), and what the restore and the restored server write would go through it.
    A link where PostgreSQL keeps a directory whose contents no backup holds (pg_wal, ...)
    becomes an empty directory; any other is removed and named ("name -> where it
    pointed"). Snapshots since backups follow the data directory's own links hold their
    content instead; older ones, and one crafted by whoever could write the repository,
    may still hold links."""
    dropped = []
    for root, dirs, files in os.walk(target):  # a linked directory is listed, never entered
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            if not os.path.islink(path):
                continue
            rel = os.path.relpath(path, target)
            pointed = os.readlink(path)
            os.unlink(path)
            if rel in EXCLUDED_DIR_CONTENTS:
                os.mkdir(path, 0o700)
            else:
                dropped.append(f"{rel} -> {pointed}")
    return dropped


STANDBY_PLACEHOLDER = """\
# A standby (lifeboat restore --standby): point it at the primary to stream from it, e.g.
# primary_conninfo = 'host=PRIMARY port=5432 user=REPLICATION_USER'
# primary_slot_name = 'SLOT'
# and, to follow the primary through its own future promotions:
# recovery_target_timeline = 'latest'
"""


def _start_and_check(
    cluster: PgCluster,
    asset: PostgresAsset,
    result: PgRestoreResult,
    missing: list[str],
    staged: Callable[[], bool] | None = None,
) -> None:
    """Start the restored cluster, wait until it is promoted (a standby: until it accepts
    read-only queries; with ``staged``, replaying in standby mode: promoted by us once
    every WAL file is staged), then run pg_amcheck and the policy's SQL checks."""
    t0 = time.monotonic()
    try:
        cluster.start()
        if result.standby:
            cluster.wait_accepting()
        else:
            wait_writable(cluster, staged)
    except RestoreError as exc:
        log = cluster.log_path.read_text(errors="replace")
        if TARGET_NOT_REACHED in log:
            raise _target_not_reached(result.recovery_target, log) from None
        if missing:
            raise RestoreError(
                f"recovery stopped: WAL segment {missing[0]} is missing from the archive",
                hint="restore to an earlier point; 'lifeboat wal verify' lists gaps",
            ) from None
        if result.links_not_restored:  # a linked postgresql.conf: the content is the source host's
            raise RestoreError(
                exc.message,
                hint="symbolic links not restored: "
                + ", ".join(result.links_not_restored)
                + "; restore again without --start, copy what they pointed at into the target, "
                "then start it with pg_ctl",
            ) from None
        raise exc
    result.steps["replay"] = round(time.monotonic() - t0, 3)
    result.started = True
    found = LAST_TXN.findall(cluster.log_path.read_text(errors="replace"))
    result.recovered_to = found[-1] if found else None
    t0 = time.monotonic()
    if result.standby:  # read-only: pg_amcheck could not install its extension
        result.checks.append(CheckResult("pg_amcheck", True, "skipped on a standby (read-only)"))
    else:
        result.checks.append(amcheck(cluster))
    result.checks.extend(run_sql_checks(cluster.dsn, list(asset.checks), dsn_dbname(asset.dsn)))
    result.steps["checks"] = round(time.monotonic() - t0, 3)
    result.ok = all(c.ok for c in result.checks)


def _disabled_note(r: PgRestoreResult) -> str:
    n = len(r.archive_settings_disabled)
    return f" ({n} inherited archive settings commented out)" if n else ""


def _summary(r: PgRestoreResult) -> list[str]:
    lines = [
        f"{r.asset}: base backup {r.snapshot[:12]} restored into {r.target}, "
        f"{r.wal_segments} WAL segments staged, recovery target {r.recovery_target}",
        f"WAL archiving in the restored cluster: {r.archiving}" + _disabled_note(r),
        f"followed timeline {r.timeline.get('followed')}: {r.timeline.get('reason')}",
        "timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in r.steps.items()),
    ]
    for d in r.timeline.get("divergent", []):
        lines.append(
            f"divergent branch: timeline {d['timeline']} forked from {d['parent']} at {d['fork_lsn'] or '?'}"
            f" while {d['parent']} kept archiving (to {d['parent_archived_after_fork']});"
            f" newest WAL on timeline {d['newest_wal_on']}"
        )
    if r.inherited_settings_cleared:
        cleared = ", ".join(r.inherited_settings_cleared)
        lines.append(f"inherited settings cleared (they reach production): {cleared}")
    if r.links_not_restored:
        lines.append(
            "symbolic links not restored (their targets are the source host's): "
            + ", ".join(r.links_not_restored)
        )
    if r.streamed_wal:
        lines.append(f"from the WAL stream (not yet archived): {', '.join(r.streamed_wal)}")
    if r.started and r.standby:
        lines.append(
            f"running as a standby (in recovery) on port {r.port}; to stream, set primary_conninfo "
            "at the end of postgresql.auto.conf or with ALTER SYSTEM (lifeboat cleared the inherited one)"
        )
    elif r.started:
        lines.append(f"running on port {r.port}; recovered to {r.recovered_to or 'unknown'}")
        for c in r.checks:
            lines.append(f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    else:
        lines.append("not started: start it with pg_ctl, or pass --start to have lifeboat start and check it")
    return lines


__all__ = ["ConfigError", "restore_postgres"]
