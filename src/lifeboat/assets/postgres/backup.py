"""Base backups with the non-exclusive low-level API, reading PGDATA in parallel.

One connection holds ``pg_backup_start``/``pg_backup_stop``; files are streamed through
the repository (no copy on local disk), so unchanged page ranges are stored once.
"""

from __future__ import annotations

import fnmatch
import os
import socket
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from lifeboat.assets.postgres.connection import PgError, connect, first_line
from lifeboat.assets.postgres.pagecheck import PAGE_SIZE, BadPage, ChecksumScan
from lifeboat.assets.postgres.standby import Source, close_stop_segment, primary_position, wait_replayed
from lifeboat.assets.postgres.walnames import parse_lsn, segment_of
from lifeboat.errors import ConfigError, NotFoundError, StorageError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo import Entry, Repository, SnapshotInfo
from lifeboat.repo.backup import BackupSession

if TYPE_CHECKING:
    from lifeboat.assets.postgres.model import PostgresAsset
    from lifeboat.policy import Policy

CHUNK_SIZE = 128 << 10  # 16 pages: a changed page range costs 128 KiB, not a 1 GiB segment file
READ_WORKERS = 4
ARCHIVE_TIMEOUT = 120.0

# What PostgreSQL documents as safe to omit from a base backup (pg_basebackup's list).
EXCLUDED_DIR_CONTENTS = {
    "pg_wal",
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
}
EXCLUDED_FILES = {
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "standby.signal",
    "recovery.signal",
    "pg_internal.init",
    "current_logfiles",
}
EXCLUDED_PATTERNS = ("pgsql_tmp*", "*.lifeboat")


def excluded(name: str, is_dir_child_of: str | None) -> bool:
    """Whether a data directory entry stays out of a base backup (pg_wal contents, pid files, ...)."""
    if is_dir_child_of in EXCLUDED_DIR_CONTENTS:
        return True
    if name in EXCLUDED_FILES:
        return True
    return any(fnmatch.fnmatch(name, pattern) for pattern in EXCLUDED_PATTERNS)


def walk_pgdata(pgdata: Path) -> list[tuple[str, Path, os.stat_result]]:
    """(path in snapshot, real path, stat) for everything to capture; tablespaces inline,
    and what the data directory's own links point at (a pg_wal moved by initdb --waldir, a
    configuration file kept elsewhere) captured as it is there, as pgBackRest does: a
    restore writes no link back (restore.replace_links), so a link's content is what the
    copy can use. A link that cannot be followed (dangling, a loop, unreadable) or that
    overlaps the data directory (into it, or to it or above it: the walk would take it
    again, WAL included) stays a link: dropped at restore, and named."""
    items: list[tuple[str, Path, os.stat_result]] = []
    stack: list[tuple[str, Path]] = [("", pgdata)]
    while stack:
        rel, path = stack.pop()
        tablespace = rel.startswith("pg_tblspc/") and rel.count("/") == 1
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode) and (tablespace or _followable(rel, path, pgdata)):
                st = os.stat(path)
        except FileNotFoundError:
            continue  # dropped while we walked: WAL replay recreates the truth
        items.append((rel, path, st))
        if stat.S_ISDIR(st.st_mode):
            try:
                children = sorted(os.scandir(path), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            top = rel.split("/", 1)[0] if rel else None
            for child in children:
                child_rel = f"{rel}/{child.name}" if rel else child.name
                if excluded(child.name, top if rel == top else None):
                    continue
                stack.append((child_rel, Path(child.path)))
    return items


def _followable(rel: str, link: Path, pgdata: Path) -> bool:
    """Whether a backup follows this link of the data directory: a top-level one whose
    target is readable and lies outside the data directory (not in it, not it, not above it)."""
    if not rel or "/" in rel:
        return False
    try:
        target = os.path.realpath(link, strict=True)
        os.stat(target)
    except OSError:  # dangling, a loop, or not ours to read
        return False
    home = os.path.realpath(pgdata)
    inside = os.path.commonpath([target, home]) == home
    above = os.path.commonpath([target, home]) == target
    return not (inside or above)


def local_pgdata(asset: PostgresAsset) -> Path | None:
    """The data directory a backup reads files from (the standby's when backing up from
    one), or None when it is not on this host (then the replication protocol streams it)."""
    local = asset.standby_pgdata if Source.of(asset).standby else asset.pgdata
    return Path(local) if local is not None and Path(local).exists() else None


def backup_postgres(
    policy: Policy, asset: PostgresAsset, repo: Repository, progress: ProgressSink = NO_PROGRESS
) -> SnapshotInfo:
    """A base backup of the asset's cluster (from its primary or a standby) into one snapshot."""
    source = Source.of(asset)
    local = local_pgdata(asset)
    if local is None:
        raise ConfigError(f"asset {asset.name}: its data directory is not on this host")
    pgdata = Path(local)
    if not (pgdata / "PG_VERSION").exists():
        raise ConfigError(f"asset {asset.name}: {pgdata} is not a PostgreSQL data directory")
    with connect(source.dsn) as conn:
        version = conn.execute("show server_version_num").fetchone()
        sysid = conn.execute("select system_identifier from pg_control_system()").fetchone()
        if version is None or int(version[0]) < 150000:
            raise PgError("PostgreSQL 15 or newer is required")
        if source.standby:
            wait_replayed(conn, primary_position(source.primary_dsn, conn))
        label = f"lifeboat {asset.name} {socket.gethostname()}"
        scan = checksum_scan(conn)
        start = _backup_call(conn, "select pg_backup_start(%s, true)::text", (label,))
        assert start is not None
        scan.start_lsn = parse_lsn(str(start[0]))
        if source.standby:
            wait_replayed(conn, scan.start_lsn)  # a restartpoint is replayed by definition: a guard
        tli = conn.execute("select timeline_id from pg_control_checkpoint()").fetchone()
        try:
            info = _copy(repo, asset, pgdata, progress, start, tli, version, sysid, conn, scan, source)
        except BaseException:
            try:
                conn.execute("select pg_backup_stop(false)")
            except psycopg.Error:
                pass
            raise
    return info


def _backup_call(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> Any:
    """pg_backup_start/stop; the server's refusal as one line (e.g. a standby promoted during
    the backup, or full_page_writes turned off on the primary while it ran)."""
    try:
        return conn.execute(sql, params).fetchone()
    except psycopg.Error as exc:
        raise PgError(f"PostgreSQL refused the base backup: {first_line(exc)}") from None


def wait_for_archived(repo: Repository, asset: str, segment: str, timeout: float = ARCHIVE_TIMEOUT) -> None:
    """Until the last segment the backup needs is in the repository's WAL archive."""
    from lifeboat.assets.postgres.wal import namespace

    deadline = time.monotonic() + timeout
    while True:
        try:
            repo.get_ref(namespace(asset), segment)
            return
        except NotFoundError:
            if time.monotonic() > deadline:
                raise PgError(
                    f"WAL segment {segment} did not reach the archive within {timeout:.0f} s; "
                    "the backup would not be restorable",
                    hint=f"check archive_command is 'lifeboat wal push --asset {asset} %p' "
                    "(lifeboat pg configure) and pg_stat_archiver for failures",
                ) from None
            time.sleep(0.05)


def _copy(
    repo: Repository,
    asset: PostgresAsset,
    pgdata: Path,
    progress: ProgressSink,
    start: Any,
    tli: Any,
    version: Any,
    sysid: Any,
    conn: psycopg.Connection[Any],
    scan: ChecksumScan,
    source: Source,
) -> SnapshotInfo:
    items = walk_pgdata(pgdata)
    progress.start(sum(st.st_size for _, _, st in items if stat.S_ISREG(st.st_mode)))
    chunk = asset.chunk_size or CHUNK_SIZE
    # The per-file manifest is the ordered list of chunk MACs (see Repository.backup)
    with repo.backup(
        asset.name, "postgres", chunk_size=chunk, progress=progress, file_sha256=False
    ) as session:
        regular = []
        for rel, path, st in items:
            if not rel:
                continue
            mode = st.st_mode
            common = {"mode": mode & 0o7777, "mtime_ns": st.st_mtime_ns, "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISDIR(mode):
                session.add_entry(Entry(path=rel, type="dir", **common))  # type: ignore[arg-type]
            elif stat.S_ISLNK(mode):
                session.add_entry(Entry(path=rel, type="symlink", target=os.readlink(path), **common))  # type: ignore[arg-type]
            elif stat.S_ISREG(mode):
                regular.append((rel, path, st))

        flagged: dict[str, Entry] = {}

        def add(item: tuple[str, Path, os.stat_result]) -> None:
            rel, path, st = item
            identity = f"{rel}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
            try:
                if scan.applies(rel):
                    entry = add_checked(session, scan, rel, path, identity)
                    if entry.meta.get("bad_pages"):
                        flagged[rel] = entry
                else:
                    session.add_file(rel, path, identity=identity)
            except StorageError as exc:
                if "disappeared" not in exc.message:
                    raise  # a relation dropped during the backup is fine: WAL replay removes it

        # pg_control last: a backup from a standby ends at the minRecoveryPoint of the copied
        # pg_control, which must therefore be newer than every page copied before it
        control = [item for item in regular if item[0] == "global/pg_control"]
        with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
            for future in [pool.submit(add, item) for item in regular if item[0] != "global/pg_control"]:
                future.result()
        for item in control:
            add(item)
        # Not pg_backup_stop(true): the server re-checks the archive only once a second.
        # Waiting for the segment in our own archive is faster and proves more (pgBackRest's
        # archive-check does the same).
        row = _backup_call(conn, "select lsn::text, labelfile, spcmapfile from pg_backup_stop(false)")
        assert row is not None
        stop_lsn, labelfile, spcmapfile = row
        timeline = int(tli[0]) if tli else 1
        record_bad_pages(scan, source.dsn, flagged)
        if source.standby:
            close_stop_segment(source.primary_dsn, parse_lsn(stop_lsn))
        wait_for_archived(repo, asset.name, segment_of(parse_lsn(stop_lsn) - 1, timeline).name)
        session.add_bytes("backup_label", labelfile.encode(), mode=0o600)
        if spcmapfile:
            session.add_bytes("tablespace_map", spcmapfile.encode(), mode=0o600)
        session.set_labels(
            {
                "start_lsn": str(start[0]),
                "stop_lsn": stop_lsn,
                "timeline": str(timeline),
                "start_wal": segment_of(parse_lsn(str(start[0])), timeline).name,
                "stop_wal": segment_of(parse_lsn(stop_lsn), timeline).name,
                "pg_version": str(version[0]),
                "system_identifier": str(sysid[0]) if sysid else "",
                **source.labels(),
                **scan.labels(),
            }
        )
        info = session.commit()
        scan.remember(info.id)
        return info


def checksum_scan(conn: psycopg.Connection[Any]) -> ChecksumScan:
    """Page verification when the cluster computes page checksums (initdb -k / pg_checksums)."""
    row = conn.execute("show data_checksums").fetchone()
    return ChecksumScan(enabled=row is not None and str(row[0]) == "on", start_lsn=0)


def add_checked(session: BackupSession, scan: ChecksumScan, rel: str, path: Path, identity: str) -> Entry:
    """A relation file, its pages verified as they are stored (one read for both)."""
    reused = session.reuse(rel, identity)
    if reused is not None:
        scan.carry(reused.meta.get("bad_pages"))  # unchanged since: same pages, same verdict
        return reused
    try:
        with open(path, "rb", buffering=0) as fh:
            st = os.fstat(fh.fileno())

            def reread(index: int) -> bytes | None:
                try:
                    return os.pread(fh.fileno(), PAGE_SIZE, index * PAGE_SIZE)
                except OSError:
                    return None

            reader = scan.reader(rel, fh, reread)
            entry = session.add_stream(
                rel,
                reader,  # type: ignore[arg-type]
                mode=st.st_mode & 0o7777,
                mtime_ns=st.st_mtime_ns,
                uid=st.st_uid,
                gid=st.st_gid,
                identity=identity,
            )
            bad = scan.done(reader)
    except FileNotFoundError:
        raise NotFoundError(f"{path} disappeared during the backup") from None
    except PermissionError:
        raise StorageError(f"permission denied reading {path}") from None
    if bad:
        entry.meta["bad_pages"] = [b.to_json() for b in bad]
    return entry


def record_bad_pages(scan: ChecksumScan, dsn: str, flagged: dict[str, Entry]) -> None:
    """Name the relations of the bad pages and keep the detail in the (encrypted) tree."""
    scan.name_relations(dsn)
    by_file: dict[str, list[BadPage]] = {}
    for page in scan.bad:
        by_file.setdefault(page.file, []).append(page)
    for rel, entry in flagged.items():
        entry.meta["bad_pages"] = [b.to_json() for b in by_file.get(rel, [])]
