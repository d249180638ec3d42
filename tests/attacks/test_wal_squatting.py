"""WAL jamming (issue #14): a compromised host with storage credentials, and either a writer
key of another asset or no key at all, writes the WAL segment names a real PostgreSQL
cluster will archive next. Before signed refs, `wal push` then failed for ever ("already
stored with different content"): pg_wal filled up and the primary stopped. Now the genuine
push stores its segment side by side with the squatter and succeeds, a point-in-time restore
replays the genuine WAL, and `check` names every squatter."""

from __future__ import annotations

import json

from lifeboat.assets.postgres.cluster import chown_tree, free_port
from lifeboat.assets.postgres.walnames import Segment
from lifeboat.crypto.keys import load_backup_key
from lifeboat.repo import Repository
from lifeboat.repo.format import ref_name
from lifeboat.storage import open_storage
from tests.pgsandbox import PgSandbox

NS = "wal/db"


def archiver(pg: PgSandbox) -> tuple[int, int]:
    archived, failed = pg.sql("select archived_count, failed_count from pg_stat_archiver")[0]
    return int(archived), int(failed)


def test_planted_future_wal_names_do_not_stop_archiving_or_replay(pg: PgSandbox) -> None:
    (pg.root / "web").mkdir()
    pg.builder.files("web", [pg.root / "web"], cls="critical")
    pg.write_policy()
    (pg.root / "host2").mkdir()
    chown_tree(pg.root / "host2", pg.user)
    pg.json("keys", "add-writer", "web-1", "--assets", "web", "--out", str(pg.root / "host2" / "web.key"))
    pg.sql("insert into items (label) values ('base')")
    pg.run("backup", "db")

    # The attacker: web-1's key file and the storage. It writes the next six segment names.
    current = Segment.parse(pg.sql("select pg_walfile_name(pg_current_wal_lsn())")[0][0])
    assert current is not None
    planted = [current.next()]  # at a segment boundary the name is the previous (archived) one
    for _ in range(5):
        planted.append(planted[-1].next())
    storage = open_storage(f"file://{pg.root / 'repo'}")
    attacker = Repository.open(storage, backup_key=load_backup_key(pg.root / "host2" / "web.key"))
    attacker.require_writer_for = lambda asset: None  # type: ignore[method-assign]  # its own code skips the client's up-front refusal
    for i, seg in enumerate(planted):
        if i % 2 == 0:
            attacker.put_ref(NS, seg.name, b"\0" * 8192)  # signed by web-1, a writer of web only
        else:
            storage.put(ref_name(NS, seg.name), b"planted without any key")
    chown_tree(pg.root / "repo", pg.user)  # the archiver runs as the cluster's user
    _, failed_before = archiver(pg)

    labels = []
    for i in range(len(planted)):
        labels.append(f"row-{i}")
        pg.sql(f"insert into items (label) values ('{labels[-1]}')")
        pg.switch_and_wait_archived()  # raises when a segment is not archived in time
    assert archiver(pg)[1] == failed_before  # no archive_command failed, not even once
    stored = sorted(p.name for p in (pg.root / "repo" / "refs" / "wal" / "db").iterdir())
    for seg in planted:
        assert seg.name in stored and any(n.startswith(seg.name + "~") for n in stored), seg.name
    verified = pg.json("wal", "verify", "--asset", "db")
    assert verified["ok"] and verified["last"] >= planted[-1].name

    target, port = pg.root / "restored", free_port()
    out = pg.json("restore", "db", "--target", str(target), "--port", str(port), "--start", "--latest")
    try:
        assert out["ok"], out
        rows = sorted(r[0] for r in pg.sql("select label from items", pg.restored_dsn(target, port)))
        assert rows == sorted(["base", *labels])
    finally:
        pg.stop_restored(target)

    proc = pg.run("check", "--json", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    refused = {
        p["object"]: p["message"] for p in json.loads(proc.stdout)["problems"] if p["kind"] == "refused-ref"
    }
    damaged = {p["object"] for p in json.loads(proc.stdout)["problems"] if p["kind"] == "corrupt-ref"}
    for i, seg in enumerate(planted):
        if i % 2 == 0:
            assert "by web-1 refused: writer may not write this asset" in refused[ref_name(NS, seg.name)]
        else:
            assert ref_name(NS, seg.name) in damaged
    audit = [json.loads(line) for line in (pg.root / ".lifeboat" / "audit.jsonl").read_text().splitlines()]
    squatted = {e["details"]["segment"] for e in audit if "squatters" in e.get("details", {})}
    assert squatted == {seg.name for seg in planted}
