"""A real PostgreSQL cluster archiving into a real lifeboat repository, for tests.

Everything runs as the `postgres` user when the tests run as root (PostgreSQL refuses
root, and archive_command runs as the server's user), so the sandbox directory is owned
by that user and every lifeboat command is run through `runuser`.
"""

from __future__ import annotations

import json
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

POLICY = """
[repository]
url = {url}
keyfile = "keys/backup.key"
recovery_key = "keys/recovery.key"

[deployment]
mode = "development"

[classes.critical]
rpo = "5m"
rto = "30m"
retention = {{ last = 10 }}

[assets.db]
kind = "postgres"
class = "critical"
pgdata = {pgdata}
dsn = {dsn}
stream = true
checks = [ {{ name = "items exist", sql = "select count(*) > 0 from items", expect = "t" }} ]
"""


@dataclass
class PgSandbox:
    root: Path
    cluster: PgCluster
    policy: Path
    user: str | None
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def lb(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "lifeboat", "--config", str(self.policy), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=self.env, cwd=self.root
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"lifeboat {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def lb_json(self, *args: str) -> Any:
        return json.loads(self.lb(*args, "--json").stdout)

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
    policy = root / "lifeboat.toml"
    toml = json.dumps  # a JSON string is a valid TOML basic string
    policy.write_text(
        POLICY.format(url=toml(f"file://{root}/repo"), pgdata=toml(f"{root}/pgdata"), dsn=toml(cluster.dsn))
    )
    (root / "keys").mkdir()
    chown_tree(root, user)
    sandbox = PgSandbox(root, cluster, policy, user)
    sandbox.lb("init")
    cluster.initdb(
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
