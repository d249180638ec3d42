"""Continuous WAL streaming: writes that never reached archive_command are restored."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from lifeboat.assets.postgres.cluster import PgCluster, free_port
from tests.postgres.test_pitr import labels


def test_streamed_wal_restores_writes_the_archive_never_saw(pg):
    pg.sql("insert into items (label) values ('base')")
    pg.lb("backup", "db")
    pg.switch_and_wait_archived()
    cmd = [sys.executable, "-m", "lifeboat", "--config", str(pg.policy), "wal", "stream", "--asset", "db"]
    cmd += ["--flush-every", "0.3", "--max-seconds", "9", "--json"]  # runuser would eat a SIGTERM
    if pg.user:
        cmd = ["runuser", "-u", pg.user, "--", *cmd]
    streamer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=pg.root)
    try:
        time.sleep(3)  # slot created, receiving
        pg.sql("insert into items (label) values ('only-streamed')")
        unarchived = pg.sql("select pg_walfile_name(pg_current_wal_lsn())")[0][0]
        time.sleep(2.5)  # a few flushes
    finally:
        # the primary dies before its current segment is ever archived
        PgCluster(pg.cluster.datadir, 0, pg.root, pg.cluster.pg_bin, pg.user).stop("immediate")
        out, err = streamer.communicate(timeout=60)
    assert streamer.returncode == 0, err
    stats = json.loads(out)
    assert stats["partial_versions"] >= 1
    archived = pg.lb_json("wal", "verify")["last"]
    assert archived < unarchived  # archive_command never shipped it
    target, port = pg.root / "restored", free_port()
    result = pg.lb_json("restore", "db", "--target", str(target), "--port", str(port), "--start", "--latest")
    try:
        assert result["ok"] and unarchived in result["streamed_wal"], result
        assert labels(pg, target, port) == ["base", "only-streamed"]
    finally:
        pg.stop_restored(target)
    status = json.loads(pg.lb("status", "--json", check=False).stdout)
    db = next(a for a in status["assets"] if a["asset"] == "db")
    assert db["exposure_s"] is not None and db["exposure_s"] < 60
