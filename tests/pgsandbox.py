"""A real PostgreSQL cluster archiving into a real lifeboat repository, for tests.

Everything runs as the `postgres` user when the tests run as root (PostgreSQL refuses
root, and archive_command runs as the server's user), so the sandbox directory is owned
by that user and every lifeboat command is run through `runuser`.

Each test process runs initdb once (``PgCluster.initdb``) and every sandbox cluster is a
copy of that data directory: `cp -a` takes a fraction of initdb's time (initdb fsyncs
every file it writes: 1.3 s alone, 4-6 s on a busy machine).
A copy is the never-started cluster initdb left, so its WAL starts where a fresh one's
does; only its system identifier is shared with the process's other sandboxes (each has
its own repository; a test wanting a second, foreign cluster runs initdb itself).
Test clusters run with fsync = off: nothing here survives an OS crash, and a server
stopped (or killed) leaves its writes in the page cache for the next reader.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from lifeboat.assets.postgres.cluster import PgCluster, chown_tree, free_port, run_as_user
from lifeboat.assets.postgres.configure import archive_command
from lifeboat.assets.postgres.quoting import setting
from tests.harness import LifeboatCli, PolicyBuilder


@dataclass
class PgSandbox(LifeboatCli):
    """The runner (as the clusters' OS user, in the sandbox directory) plus the cluster and
    the policy builder its lifeboat.toml came from."""

    root: Path = field(default=Path("."))
    cluster: PgCluster = field(default=None)  # type: ignore[assignment]  # always given
    builder: PolicyBuilder = field(default_factory=PolicyBuilder)

    def write_policy(self) -> None:
        """Save the builder's policy over lifeboat.toml (after a test changed a table)."""
        self.builder.write(self.policy or self.root / "lifeboat.toml")

    def sql(self, query: str, dsn: str | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(dsn or self.cluster.dsn, autocommit=True) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else []

    def switch_and_wait_archived(self, timeout: float = 60) -> str:
        """Force a segment switch and wait until PostgreSQL has archived it."""
        segment = self.sql("select pg_walfile_name(pg_current_wal_lsn())")[0][0]
        self.sql("select pg_switch_wal()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.sql("select last_archived_wal, last_failed_wal from pg_stat_archiver")[0]
            if row[0] is not None and row[0] >= segment:
                return str(row[0])
            time.sleep(0.1)
        raise AssertionError(f"segment {segment} not archived: {self.sql('select * from pg_stat_archiver')}")

    def restored_dsn(self, target: Path, port: int) -> str:
        user = self.user or "postgres"
        host = f"{target.parent}/.{target.name}.sock"
        return make_conninfo(host=host, port=port, user=user, dbname="postgres")

    def stop_restored(self, target: Path) -> None:
        PgCluster(target, 0, target.parent, self.cluster.pg_bin, self.user).stop("immediate")


def sandbox_policy(root: Path, dsn: str) -> PolicyBuilder:
    """One streamed postgres asset with a 5-minute RPO and one SQL check."""
    return (
        PolicyBuilder()
        .repository(f"file://{root}/repo", recovery_key="keys/recovery.key")
        .data_class("critical", rpo="5m", rto="30m", retention={"last": 10})
        .postgres(
            "db",
            pgdata=root / "pgdata",
            dsn=dsn,
            cls="critical",
            stream=True,
            checks=[{"name": "items exist", "sql": "select count(*) > 0 from items", "expect": "t"}],
        )
    )


@functools.cache
def pristine_datadir() -> Path:
    """A data directory as ``PgCluster.initdb`` leaves it, made once per test process."""
    top = Path(tempfile.mkdtemp(prefix="lb-pgtemplate-", dir="/tmp"))
    os.chmod(top, 0o755)
    atexit.register(shutil.rmtree, top, True)
    PgCluster(top / "pgdata", 0, top / "sock").initdb()
    return top / "pgdata"


def init_cluster(cluster: PgCluster, *extra_conf: str) -> None:
    """What ``cluster.initdb(*extra_conf)`` makes, copied from the pristine data directory:
    its own port and socket directory, then ``extra_conf``, appended (the last one wins)."""
    subprocess.run(["cp", "-a", str(pristine_datadir()), str(cluster.datadir)], check=True)
    cluster.socket_dir.mkdir(parents=True, exist_ok=True)
    chown_tree(cluster.socket_dir, cluster.user)
    cluster.configure(
        f"port = {cluster.port}",
        setting("unix_socket_directories", '"' + str(cluster.socket_dir).replace('"', '""') + '"'),
        "fsync = off",
        *extra_conf,
    )


def make_sandbox(subdir: str | None = None) -> PgSandbox:
    """A sandbox in a fresh directory; ``subdir`` names it (e.g. with shell metacharacters)."""
    user = run_as_user()
    root = Path(tempfile.mkdtemp(prefix="lb-pg-", dir="/tmp"))
    os.chmod(root, 0o755)
    if subdir is not None:
        root = root / subdir
        root.mkdir(mode=0o755)
    port = free_port()
    cluster = PgCluster(root / "pgdata", port, root / "sock")
    builder = sandbox_policy(root, cluster.dsn)
    policy = builder.write(root / "lifeboat.toml")
    (root / "keys").mkdir()
    chown_tree(root, user)
    sandbox = PgSandbox(policy=policy, user=user, cwd=root, root=root, cluster=cluster, builder=builder)
    sandbox.run("init")
    init_cluster(
        cluster,
        "wal_level = replica",
        "archive_mode = on",
        setting("archive_command", archive_command(sys.executable, policy, "db")),
        "archive_timeout = 0",
        "max_wal_senders = 2",
        "checkpoint_timeout = 30min",
    )
    cluster.start()
    sandbox.sql(
        "create table items (id serial primary key, label text not null, at timestamptz default now())"
    )
    return sandbox


def destroy(sandbox: PgSandbox) -> None:
    for path in sandbox.root.glob("*"):
        if (path / "postmaster.pid").exists():
            PgCluster(path, 0, sandbox.root, sandbox.cluster.pg_bin, sandbox.user).stop("immediate")
    top = sandbox.root
    while top.parent != Path("/tmp"):
        top = top.parent
    shutil.rmtree(top, ignore_errors=True)
