"""Continuous WAL streaming: writes that never reached archive_command are restored."""

from __future__ import annotations

import json
import os
import signal
import time

from lifeboat.assets.postgres.cluster import PgCluster, free_port
from tests.harness.wait import wait_until
from tests.postgres.test_pitr import labels

ACTIVE_SLOT = "select 1 from pg_replication_slots where slot_name = 'lifeboat_db' and active"


def newest_partial_stored(pg) -> float | None:  # type: ignore[no-untyped-def]
    """When the stream last stored a partial segment in the repository (its own record)."""
    from lifeboat import runtime
    from lifeboat.assets.postgres.stream import newest_stream_name, stream_namespace
    from lifeboat.assets.registry import load_policy

    repo = runtime.open_for_write(load_policy(pg.policy))
    try:
        name = newest_stream_name(repo.list_ref_names(stream_namespace("db")))
        return repo.get_ref(stream_namespace("db"), name).time.timestamp() if name else None
    finally:
        repo.close()


def test_streamed_wal_restores_writes_the_archive_never_saw(pg):
    pg.sql("insert into items (label) values ('base')")
    pg.run("backup", "db")
    pg.switch_and_wait_archived()
    stream = ["--flush-every", "0.3", "--max-seconds", "120", "--json"]
    streamer = pg.popen("wal", "stream", "--asset", "db", *stream, text=True)
    streamer_pid = pg.lifeboat_pid(streamer)
    try:
        wait_until(lambda: pg.sql(ACTIVE_SLOT), "the stream's replication slot to be active")
        inserted_at = time.time()
        pg.sql("insert into items (label) values ('only-streamed')")
        unarchived = pg.sql("select pg_walfile_name(pg_current_wal_lsn())")[0][0]
        wait_until(
            lambda: (newest_partial_stored(pg) or 0) > inserted_at, "a partial stored after the insert"
        )
    finally:
        # the primary dies before its current segment is ever archived
        PgCluster(pg.cluster.datadir, 0, pg.root, pg.cluster.pg_bin, pg.user).stop("immediate")
        os.kill(streamer_pid, signal.SIGTERM)  # the streamer itself: runuser would not pass it on
        out, err = streamer.communicate(timeout=60)
    assert streamer.returncode == 0, err
    stats = json.loads(out)
    assert stats["partial_versions"] >= 1
    archived = pg.json("wal", "verify")["last"]
    assert archived < unarchived  # archive_command never shipped it
    target, port = pg.root / "restored", free_port()
    result = pg.json("restore", "db", "--target", str(target), "--port", str(port), "--start", "--latest")
    try:
        assert result["ok"] and unarchived in result["streamed_wal"], result
        assert labels(pg, target, port) == ["base", "only-streamed"]
    finally:
        pg.stop_restored(target)
    status = json.loads(pg.run("status", "--json", check=False).stdout)
    db = next(a for a in status["assets"] if a["asset"] == "db")
    assert db["exposure_s"] is not None and db["exposure_s"] < 60
