"""Honest verdicts on a real archiving cluster: a drill's achieved RPO is what the restore
lacks compared with the source, not the time since the last commit; `status` reports the
last drill's verdict and open/overdue corrective actions and exits 1 on them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lifeboat.assets.postgres.cluster import chown_tree
from tests.pgsandbox import PgSandbox, destroy, make_sandbox


@pytest.fixture
def pg() -> Iterator[PgSandbox]:
    sandbox = make_sandbox()
    policy = sandbox.builder.table("assets", "db", stream=False)
    policy.drill("pitr", "pg-pitr", ["db"], evidence_dir=sandbox.root / "evidence")
    # The drills judge against a 1-second RPO; `status` reads the same repository, drills
    # and ledger through a policy whose RPO a quiet minute does not breach.
    policy.table("classes", "critical", rpo="1h").write(sandbox.root / "relaxed.toml")
    policy.table("classes", "critical", rpo="1s")
    sandbox.write_policy()
    chown_tree(sandbox.root, sandbox.user)
    yield sandbox
    destroy(sandbox)


def drill(pg: PgSandbox) -> dict[str, Any]:
    proc = pg.run("drill", "run", "pitr", "--json", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    assert (proc.returncode == 0) == (out["verdict"] == "pass")
    return out


def status(pg: PgSandbox) -> tuple[int, dict[str, Any]]:
    proc = pg.run("--config", str(pg.root / "relaxed.toml"), "status", "--json", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def wait_older_than(pg: PgSandbox, moment: datetime, seconds: float, timeout: float = 30) -> None:
    """Until the source's clock is ``seconds`` past ``moment`` (polled, never slept blind)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pg.sql("select clock_timestamp()")[0][0] - moment > timedelta(seconds=seconds):
            return
        time.sleep(0.1)
    raise AssertionError(f"the clock did not pass {moment} + {seconds}s")


def break_archiving(pg: PgSandbox, command: str) -> None:
    pg.sql(f"alter system set archive_command = '{command}'")
    pg.sql("select pg_reload_conf()")
    deadline = time.monotonic() + 30
    while pg.sql("show archive_command")[0][0] != command:
        assert time.monotonic() < deadline, "archive_command was not reloaded"
        time.sleep(0.1)


def test_quiet_database_loses_nothing_and_passes_then_unarchived_commits_fail(pg):
    pg.sql("insert into items (label) select 'before ' || g from generate_series(1, 100) g")
    pg.run("backup", "db")
    committed = pg.sql("insert into items (label) values ('last') returning now()")[0][0]
    pg.switch_and_wait_archived()
    wait_older_than(pg, committed, 2)  # the last commit is now older than the 1 s RPO target

    out = drill(pg)
    assert out["verdict"] == "pass", out["reasons"]
    assert out["achieved"]["db"]["rpo_s"] == 0.0
    assert "nothing lost" in out["rpo_methods"]["db"]
    bundle = json.loads((Path(out["bundle"]) / "drill.json").read_text())
    assert bundle["rpo_methods"]["db"] == out["rpo_methods"]["db"]  # the evidence says how
    assert "nothing lost" in (Path(out["bundle"]) / "report.md").read_text()
    code, report = status(pg)
    db = report["assets"][0]
    assert code == 0 and db["last_drill_verdict"] == "pass" and db["open_actions"] == [], report

    # Archiving broken on purpose: these rows exist only in the source's pg_wal.
    archive = pg.sql("show archive_command")[0][0]
    break_archiving(pg, "false")
    lost_at = pg.sql("insert into items (label) values ('lost') returning now()")[0][0]
    pg.sql("select pg_switch_wal()")
    wait_older_than(pg, lost_at, 2)

    out = drill(pg)
    assert out["verdict"] == "fail"
    rpo = out["achieved"]["db"]["rpo_s"]
    reference = datetime.fromisoformat(out["reference_time"])
    assert rpo is not None and rpo >= 2 and rpo <= (reference - lost_at).total_seconds() + 1
    assert "not in the restore" in out["rpo_methods"]["db"], out["rpo_methods"]
    assert any(r.startswith("db: RPO") for r in out["reasons"]), out["reasons"]

    code, report = status(pg)
    db = report["assets"][0]
    assert code == 1 and not report["ok"]
    assert db["last_drill_verdict"] == "fail" and db["open_actions"], db
    assert any("last drill pitr failed" in b for b in db["breaches"]), db["breaches"]
    text = pg.run("--config", str(pg.root / "relaxed.toml"), "status", check=False)
    assert text.returncode == 1 and "db: last drill pitr FAILED" in text.stdout

    # Fixed: archiving resumes (the lost rows reach the archive), the actions are closed.
    break_archiving(pg, archive)
    pg.switch_and_wait_archived()
    out = drill(pg)
    assert out["verdict"] == "pass", out["reasons"]
    assert out["achieved"]["db"]["rpo_s"] == 0.0
    for action in json.loads(pg.run("actions", "list", "--json").stdout):
        pg.run("actions", "close", action["id"], "--note", "archive_command restored")
    code, report = status(pg)
    assert code == 0, report
    assert report["assets"][0]["open_actions"] == [] and report["assets"][0]["last_drill_verdict"] == "pass"


def test_an_overdue_corrective_action_fails_status_until_closed(pg):
    pg.sql("insert into items (label) values ('one')")
    pg.run("backup", "db")
    pg.switch_and_wait_archived()
    out = drill(pg)
    assert out["verdict"] == "pass", out["reasons"]
    ledger = pg.root / "docs" / "operations" / "corrective-actions.json"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    opened = datetime.now(UTC) - timedelta(days=40)  # the class drills every 30 days
    old = {
        "id": "CA-0001",
        "title": "db: restore slower than the RTO",
        "detail": "db: RTO 2000s exceeds the target 1800s",
        "evidence": out["bundle"],
        "owner": "dba",
        "source": "drill pitr",
        "status": "open",
        "opened": opened.isoformat(timespec="seconds"),
        "closed": None,
        "note": None,
    }  # as written before actions carried an asset and a due date
    ledger.write_text(json.dumps([old]))
    chown_tree(pg.root / "docs", pg.user)

    code, report = status(pg)
    db = report["assets"][0]
    assert code == 1 and db["open_actions"] == ["CA-0001"]
    assert db["overdue_actions"] and db["overdue_actions"][0].startswith("CA-0001 due ")
    assert any("CA-0001 overdue" in b for b in db["breaches"])
    text = pg.run("--config", str(pg.root / "relaxed.toml"), "status", check=False).stdout
    assert "db: last drill pitr passed" in text and "corrective actions 1 open (CA-0001), 1 overdue" in text

    old["opened"] = datetime.now(UTC).isoformat(timespec="seconds")  # open, but not yet due
    ledger.write_text(json.dumps([old]))
    code, report = status(pg)
    assert code == 0 and report["assets"][0]["open_actions"] == ["CA-0001"], report

    old["opened"] = opened.isoformat(timespec="seconds")
    ledger.write_text(json.dumps([old]))
    pg.run("actions", "close", "CA-0001", "--note", "faster disks")
    code, report = status(pg)
    assert code == 0 and report["assets"][0]["open_actions"] == [], report

    ledger.write_text("{not json")  # a hand edit gone wrong: one line, not an internal error
    proc = pg.run("--config", str(pg.root / "relaxed.toml"), "status", check=False)
    assert proc.returncode == 2 and "not a corrective-actions ledger" in proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_source_that_is_gone_gives_an_upper_bound_said_as_such(pg):
    pg.sql("insert into items (label) values ('one')")
    pg.run("backup", "db")  # no commit after it: the base backup is the newest data restored
    pg.switch_and_wait_archived()
    wait_older_than(pg, pg.sql("select now()")[0][0], 2)
    pg.cluster.stop("immediate")  # the outage: nothing left to compare the restore with

    out = drill(pg)
    assert out["verdict"] == "fail"
    assert out["rpo_methods"]["db"].startswith("upper bound: the source's WAL position is unknown")
    assert out["achieved"]["db"]["rpo_s"] >= 2
    assert any(r.startswith("db: RPO up to ") for r in out["reasons"]), out["reasons"]
