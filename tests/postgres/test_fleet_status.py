"""`lifeboat status` over a fleet: one repository, assets on several hosts, riskiest first."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

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
