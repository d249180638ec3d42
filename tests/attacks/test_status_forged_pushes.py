"""An insider with the state dir appends `wal-push` entries to the audit log, dated now,
to make a PostgreSQL asset whose archiving stopped look current. Before, status took the
newest pushed time from that log (it names no repository and nothing checks it against the
archive), so the forged line set the asset's exposure to seconds. Now status measures from
the archive alone, and the stale asset is reported in breach."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from tests.pgsandbox import PgSandbox


def db_status(pg: PgSandbox) -> dict:
    out = json.loads(pg.run("status", "--json", check=False).stdout)
    return next(a for a in out["assets"] if a["asset"] == "db")


def test_a_forged_push_in_the_audit_log_does_not_make_a_stale_archive_current(pg: PgSandbox) -> None:
    pg.run("backup", "db")
    pg.switch_and_wait_archived()
    pg.clock.advance(hours=2)  # archiving "stopped" two hours ago (RPO 5 minutes)
    stale = db_status(pg)
    assert stale["exposure_s"] >= 7200 and any("exceeds RPO" in b for b in stale["breaches"])
    audit = pg.root / ".lifeboat" / "audit.jsonl"
    forged_at = datetime.fromtimestamp(datetime.now(UTC).timestamp() + 7200, UTC)
    line = {
        "time": forged_at.isoformat(),
        "operation": "wal-push",
        "asset": "db",
        "outcome": "ok",
        "segment": "0000000100000000000000FF",
    }
    with audit.open("a") as log:
        log.write(json.dumps(line) + "\n")
    seen = db_status(pg)
    assert seen["last_backup"] == stale["last_backup"]
    assert seen["exposure_s"] >= 7200 and any("exceeds RPO" in b for b in seen["breaches"])
