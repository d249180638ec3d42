"""`lifeboat status` over a fleet: one repository, assets on several hosts, riskiest first."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from lifeboat.assets.postgres.connection import CONNECT_TIMEOUT_S
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


class SilentHost:
    """A PostgreSQL host that accepts connections and never answers, as one hung in an
    outage: it notes when each connection came, and once ``release_at`` have come it
    closes them all (and every later one), so no client waits on it any longer."""

    def __init__(self, release_at: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.release_at = release_at
        self.held: list[socket.socket] = []
        self.came: list[float] = []  # time.monotonic() of each connection held
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed: released, or the test is over
                return
            self.held.append(conn)
            self.came.append(time.monotonic())
            if len(self.held) >= self.release_at:
                self.close()

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


def test_status_asks_every_silent_host_at_once(pg):
    """Two clusters on a host that accepts connections and never answers: status asks both
    archivers at once, so the outage costs one connect timeout, not one per asset. Asked one
    after the other, the second connection could only come once the first had timed out."""
    silent = SilentHost(release_at=2)
    try:
        dsn = f"host=127.0.0.1 port={silent.port} dbname=app user=backup sslmode=disable gssencmode=disable"
        pg.builder.postgres("hung1", dsn=dsn, cls="critical").postgres("hung2", dsn=dsn, cls="critical")
        pg.write_policy()
        pg.run("backup", "db")
        proc = pg.run("status", "--json", check=False)
    finally:
        silent.close()
    assert len(silent.came) == 2, silent.came
    assert silent.came[1] - silent.came[0] < CONNECT_TIMEOUT_S, "the two clusters were asked in turn"
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # hung1, hung2: never backed up
    by_name = {a["asset"]: a for a in json.loads(proc.stdout)["assets"]}
    assert by_name["hung1"]["breaches"] == by_name["hung2"]["breaches"] == ["never backed up"]
    assert by_name["db"]["archive_failure"] is None and by_name["db"]["last_backup"] is not None
