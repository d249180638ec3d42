"""Base backups of a server whose data directory is not local: `pg_basebackup -Ft -X none`
streamed over the replication protocol straight into the repository (tar parsed on the
fly, nothing written to local disk)."""

from __future__ import annotations

import functools
import re
import subprocess
import tarfile
from typing import IO, TYPE_CHECKING, Any

import psycopg

from lifeboat.assets.postgres.backup import (
    CHUNK_SIZE,
    checksum_scan,
    record_bad_pages,
    wait_for_archived,
)
from lifeboat.assets.postgres.cluster import find_pg_bin
from lifeboat.assets.postgres.connection import PgError, connect
from lifeboat.assets.postgres.pagecheck import PAGE_SIZE
from lifeboat.assets.postgres.standby import Source, close_stop_segment, primary_position, wait_replayed
from lifeboat.assets.postgres.walnames import format_lsn, parse_lsn, segment_of
from lifeboat.errors import ConfigError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo import Entry, Repository, SnapshotInfo

if TYPE_CHECKING:
    from lifeboat.assets.postgres.model import PostgresAsset

# a standby has no insert position; its replay position is at or after a backup's stop
_POSITION = (
    "select (case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end)::text"
)
SIGNAL_FILES = {"standby.signal", "recovery.signal"}
START = re.compile(r"START WAL LOCATION: (\S+)")
TIMELINE = re.compile(r"START TIMELINE: (\d+)")


def stream_basebackup(
    asset: PostgresAsset, repo: Repository, progress: ProgressSink = NO_PROGRESS
) -> SnapshotInfo:
    """A base backup through pg_basebackup's tar stream (no access to the data directory)."""
    source = Source.of(asset)
    with connect(source.dsn) as conn:
        if source.standby:  # see standby.py: pg_basebackup runs the backup on the standby itself
            wait_replayed(conn, primary_position(source.primary_dsn, conn))
        version = conn.execute("show server_version_num").fetchone()
        sysid = conn.execute("select system_identifier from pg_control_system()").fetchone()
        tablespaces = conn.execute(
            "select count(*) from pg_tablespace where spcname not like 'pg_%'"
        ).fetchone()
        scan = checksum_scan(conn)
        # Until backup_label arrives, the LSN before the backup starts bounds the pages that
        # cannot have been rewritten since (a lower bound only skips more pages)
        before = conn.execute(_POSITION).fetchone()
        scan.start_lsn = parse_lsn(str(before[0])) if before else 0
    if tablespaces and tablespaces[0]:
        raise ConfigError(f"asset {asset.name}: tablespaces need a local pgdata (set pgdata)")
    pg_basebackup = find_pg_bin(asset.pg_bin) / "pg_basebackup"
    cmd = [
        str(pg_basebackup),
        "-d",
        source.dsn,
        "-D",
        "-",
        "-Ft",
        "-X",
        "none",
        "--no-manifest",
        # The server's own check aborts the whole backup at the first bad page without naming
        # it; we verify the pages ourselves as they stream past and report every one
        "--no-verify-checksums",
        "-c",
        "fast",
        "-l",
        f"lifeboat {asset.name}",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    label = ""
    flagged: dict[str, Entry] = {}
    rereader = ServerReread(source.dsn)
    with (
        rereader,
        repo.backup(
            asset.name,
            "postgres",
            chunk_size=asset.chunk_size or CHUNK_SIZE,
            progress=progress,
            file_sha256=False,
        ) as s,
    ):
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    path = member.name.removeprefix("./")
                    if member.isdir():
                        s.add_entry(
                            Entry(path=path, type="dir", mode=member.mode, mtime_ns=int(member.mtime * 1e9))
                        )
                    elif member.issym():
                        s.add_entry(
                            Entry(path=path, type="symlink", target=member.linkname, mode=member.mode)
                        )
                    elif member.isfile() and path in SIGNAL_FILES:
                        continue  # a standby's standby.signal would make every restore a standby
                    elif member.isfile():
                        stream: IO[bytes] | None = tar.extractfile(member)
                        assert stream is not None
                        if path == "backup_label":
                            data = stream.read()
                            label = data.decode()
                            s.add_bytes(path, data, mode=0o600)
                            started = START.search(label)
                            if started:
                                scan.start_lsn = parse_lsn(started.group(1))
                        elif scan.applies(path):
                            reader = scan.reader(path, stream, functools.partial(rereader.page, path))
                            entry = s.add_stream(
                                path,
                                reader,  # type: ignore[arg-type]
                                mode=member.mode,
                                mtime_ns=int(member.mtime * 1e9),
                            )
                            bad = scan.done(reader)
                            if bad:
                                entry.meta["bad_pages"] = [b.to_json() for b in bad]
                                flagged[path] = entry
                        else:
                            s.add_stream(
                                path,
                                stream,
                                mode=member.mode,
                                mtime_ns=int(member.mtime * 1e9),
                            )
        except BaseException:
            # stopped mid-stream (deadline, Ctrl-C, an error): nothing reads the tar any
            # more, and pg_basebackup would block on a full pipe forever
            proc.kill()
            proc.wait()
            raise
        rc = proc.wait()
        if rc != 0:
            err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.stderr else []
            raise PgError(f"pg_basebackup failed: {err[-1] if err else rc}")
        start, tli = START.search(label), TIMELINE.search(label)
        if not start or not tli:
            raise PgError("pg_basebackup produced no backup_label")
        with connect(source.dsn) as conn:
            row = conn.execute(_POSITION).fetchone()
        # The exact stop LSN is not reported on this path; the current LSN is at or after it,
        # so a --lsn target right after this backup may pick an older base backup (slower, not wrong).
        stop = row[0] if row else start.group(1)
        timeline = int(tli.group(1))
        record_bad_pages(scan, source.dsn, flagged)
        if source.standby:  # a standby archives nothing: the primary must close the last segment
            close_stop_segment(source.primary_dsn, parse_lsn(stop))
            wait_for_archived(repo, asset.name, segment_of(parse_lsn(stop) - 1, timeline).name)
        s.set_labels(
            {
                "start_lsn": start.group(1),
                "stop_lsn": format_lsn(parse_lsn(stop)),
                "timeline": str(timeline),
                "start_wal": segment_of(parse_lsn(start.group(1)), timeline).name,
                "stop_wal": segment_of(parse_lsn(stop), timeline).name,
                "method": "pg_basebackup",
                **source.labels(),
                "pg_version": str(version[0]) if version else "",
                "system_identifier": str(sysid[0]) if sysid else "",
                **scan.labels(),
            }
        )
        info = s.commit()
        scan.remember(info.id)
        return info


class ServerReread:
    """Reads one page again through SQL (pg_read_binary_file), for a page that failed its
    checksum in the stream: a concurrent write may have torn the server's first read. Needs
    superuser or pg_read_server_files; without it the first read's verdict stands."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: psycopg.Connection[Any] | None = None
        self.refused = False

    def __enter__(self) -> ServerReread:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()

    def page(self, path: str, index: int) -> bytes | None:
        """Read one page again from the server (a torn page or a real bad one)."""
        if self.refused:
            return None
        try:
            if self.conn is None:
                self.conn = connect(self.dsn)
            row = self.conn.execute(
                "select pg_read_binary_file(%s, %s, %s, true)", (path, index * PAGE_SIZE, PAGE_SIZE)
            ).fetchone()
        except (psycopg.Error, PgError):
            self.refused = True
            return None
        return bytes(row[0]) if row and row[0] is not None else None
