"""`lifeboat status` over a fleet: one repository, assets on several hosts, riskiest first."""

from __future__ import annotations

import json
import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor

from tests.harness.silent import SLOW_CONNECT, SilentHost
from tests.pgsandbox import PgSandbox


def add_fleet(pg: PgSandbox) -> None:
    """A second cluster (on db2.internal, never backed up yet) and that host's config files."""
    etc = pg.root / "etc2"
    etc.mkdir()
    (etc / "app.conf").write_text("listen = 5432\n")
    pg.builder.data_class("daily", rpo="1d", rto="4h")
    pg.builder.postgres("db2", dsn="host=db2.internal port=5432 dbname=app user=backup", cls="critical")
    pg.builder.files("etc2", [etc], cls="daily", host="db2.internal")
    pg.write_policy()


def test_status_groups_the_fleet_by_host_riskiest_first(pg):
    add_fleet(pg)
    pg.sql("insert into items (label) values ('x')")
    with ThreadPoolExecutor(2) as pool:  # two hosts' backups into one repository at once
        done = list(pool.map(lambda asset: pg.run("backup", asset, "--json"), ["db", "etc2"]))
    assert [json.loads(p.stdout)[0]["ok"] for p in done] == [True, True]
    pg.clock.advance(60)  # every exposure at least a minute: risks differ
    proc = pg.run("status", "--json", check=False)
    assert proc.returncode == 1  # db2 was never backed up
    out = json.loads(proc.stdout)
    local = socket.gethostname()
    by_name = {a["asset"]: a for a in out["assets"]}
    assert by_name["db"]["host"] == local  # a Unix-socket dsn: this machine
    assert by_name["db2"]["host"] == "db2.internal"  # from the dsn
    assert by_name["etc2"]["host"] == "db2.internal"  # the policy's host
    # By risk alone db (RPO 5m) comes before etc2 (RPO 1d); grouped, db2.internal's assets
    # come first, as its worst asset (never backed up) is the fleet's worst
    assert by_name["db2"]["risk"] is None and by_name["db"]["risk"] > by_name["etc2"]["risk"]
    assert [a["asset"] for a in out["assets"]] == ["db2", "etc2", "db"]
    assert out["hosts"] == [
        {"host": "db2.internal", "assets": ["db2", "etc2"]},
        {"host": local, "assets": ["db"]},
    ]
    # an operator's machine: the same policy, its own empty state (no audit log of the
    # hosts' WAL pushes): the repository alone gives the same fleet view
    view = pg.root / "fleet.toml"
    view.write_text(pg.policy.read_text() + '\n[state]\ndir = "fleet-state"\n')
    seen = json.loads(pg.run("--config", str(view), "status", "--json", check=False).stdout)
    assert [a["asset"] for a in seen["assets"]] == ["db2", "etc2", "db"]
    assert seen["hosts"] == out["hosts"]
    text = pg.run("status", check=False).stdout
    first, second = "host db2.internal: 2 asset(s), 1 breaching", f"host {local}: 1 asset(s), 0 breaching"
    assert first in text and second in text and text.index(first) < text.index(second)


def silent_fleet(pg: PgSandbox, silent: SilentHost, count: int) -> None:
    for n in range(count):
        pg.builder.postgres(f"hung{n}", dsn=silent.dsn(f"app{n}"), cls="critical")
    pg.write_policy()


def test_status_asks_every_silent_host_at_once(pg):
    """Clusters that do not answer cost status one connect timeout, not one each: they are
    all asked at once. Asked in turn, the second would be asked only once the first had
    given up."""
    silent = SilentHost(expect=2)
    silent_fleet(pg, silent, 2)
    pg.run("backup", "db")
    proc = pg.popen("status", "--json", env=SLOW_CONNECT, text=True)
    try:
        assert silent.came.wait(120), f"{len(silent.held)} of 2 silent clusters asked: asked in turn"
        silent.close()  # the hung hosts drop their connections: status goes on at once
        out, err = proc.communicate(timeout=120)
    finally:
        silent.close()
        proc.kill()
    assert proc.returncode == 1 and "Traceback" not in err  # hung0, hung1: never backed up
    by_name = {a["asset"]: a for a in json.loads(out)["assets"]}
    assert by_name["hung0"]["breaches"] == by_name["hung1"]["breaches"] == ["never backed up"]
    assert by_name["db"]["archive_failure"] is None and by_name["db"]["last_backup"] is not None


def test_status_stopped_while_hosts_are_silent_stops_at_once(pg):
    """SIGTERM (a monitoring poll's timeout) or Ctrl-C stops status while clusters keep it
    waiting: it does not wait for their answers first (nor start asking any more)."""
    silent = SilentHost(expect=3)
    silent_fleet(pg, silent, 3)
    proc = pg.popen("status", env=SLOW_CONNECT, text=True)
    try:
        assert silent.came.wait(120), f"{len(silent.held)} of 3 silent clusters asked"
        os.kill(pg.lifeboat_pid(proc), signal.SIGTERM)
        out, err = proc.communicate(timeout=120)  # the silent hosts would hold it 600 s
        asked = len(silent.held)
        # the child process that asked them went with status: nothing holds their connections
        dropped = silent.dropped(timeout=120)
    finally:
        silent.close()
        proc.kill()
    assert proc.returncode == 130 and "lifeboat: interrupted" in err and "Traceback" not in err
    # interrupted while it waited, before it printed anything
    assert out == ""
    assert asked == 3
    assert dropped, "a status probe outlived the status that asked it"


def test_status_killed_while_hosts_are_silent_leaves_nothing_asking(pg):
    """SIGKILL (the OOM killer, a monitoring agent's hard timeout) leaves status no chance
    to clean up: the child process it asks its probes in dies with it all the same."""
    silent = SilentHost(expect=2)
    silent_fleet(pg, silent, 2)
    proc = pg.popen("status", "--json", env=SLOW_CONNECT, text=True)
    try:
        assert silent.came.wait(120), f"{len(silent.held)} of 2 silent clusters asked"
        os.kill(pg.lifeboat_pid(proc), signal.SIGKILL)
        proc.communicate(timeout=120)
        dropped = silent.dropped(timeout=120)
    finally:
        silent.close()
        proc.kill()
    assert dropped, "a status probe outlived the status that asked it"


def test_a_cluster_that_refuses_the_archiver_query_does_not_stop_status(pg):
    """A monitoring role the server will not show pg_stat_archiver (or a connection lost
    after connecting, in a failover): no archiver verdict for that cluster, and status
    goes on (it stopped with an internal error, and the daemon's refresh with it)."""
    pg.sql("create role monitor login")
    pg.sql("revoke select on pg_stat_archiver from public")
    pg.builder.postgres("watched", dsn=f"{pg.cluster.dsn} user=monitor", cls="critical")
    pg.write_policy()
    pg.run("backup", "db")
    proc = pg.run("status", "--json", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # watched: never backed up
    by_name = {a["asset"]: a for a in json.loads(proc.stdout)["assets"]}
    assert by_name["watched"]["archive_failure"] is None
    assert by_name["watched"]["breaches"] == ["never backed up"]
    assert by_name["db"]["last_backup"] is not None
    # the commands that check the archiver's set-up say why they could not
    check = pg.run("policy", "check", check=False)
    assert "error: watched: cannot read pg_stat_archiver: permission denied" in check.stdout
    assert "internal error" not in check.stderr + check.stdout
    configure = pg.run("pg", "configure", "watched", check=False)
    assert configure.returncode not in (0, 70) and "cannot read pg_stat_archiver" in configure.stderr
    assert "internal error" not in configure.stderr
