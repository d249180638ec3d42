"""Page checksums verified during a base backup: a byte flipped on disk in a heap page of a
cluster initialised with --data-checksums is named by file, block, database and table in
the backup's output, its --json, the snapshot, and `status` (degraded, exit 1)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lifeboat.assets.postgres.pagecheck import PAGE_SIZE, FileChecker, page_checksum, relation_segment

pytestmark = pytest.mark.pg


def fill_items(pg, rows: int = 3000) -> tuple[str, int]:
    """Rows over several heap pages, on disk: (file relative to PGDATA, its page count)."""
    pg.sql(f"insert into items (label) select repeat('x', 100) || g from generate_series(1, {rows}) g")
    pg.sql("checkpoint")
    path = pg.sql("select pg_relation_filepath('items')")[0][0]
    pages = (pg.cluster.datadir / path).stat().st_size // PAGE_SIZE
    assert pages >= 4
    return path, pages


def flip_byte(pg, path: str, block: int) -> None:
    """With the server stopped: one bit flipped in the middle of the page, as a disk would."""
    pg.cluster.stop()
    with open(pg.cluster.datadir / path, "r+b") as fh:
        fh.seek(block * PAGE_SIZE + PAGE_SIZE // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0x10]))
    pg.cluster.start()


def pg_checksums_verdict(pg) -> list[tuple[str, int]]:
    """What PostgreSQL's own offline checker says (the cluster must be stopped)."""
    tool = pg.cluster.pg_bin / "pg_checksums"
    cmd = [str(tool), "--check", "-D", str(pg.cluster.datadir)]
    if pg.user:
        cmd = ["runuser", "-u", pg.user, "--", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.findall(r'checksum verification failed in file "([^"]+)", block (\d+)', out.stderr)
    root = str(pg.cluster.datadir) + "/"
    return [(f.removeprefix(root), int(b)) for f, b in found]


def remote_policy(pg) -> str:
    """The same asset without pgdata: backups go through pg_basebackup."""
    remote = pg.root / "remote.toml"
    remote.write_text(
        "\n".join(line for line in pg.policy.read_text().splitlines() if not line.startswith("pgdata"))
    )
    if pg.user:
        shutil.chown(remote, pg.user)
    return str(remote)


class Received(list):
    url = ""


@contextlib.contextmanager
def webhook() -> Iterator[Received]:
    """A real HTTP receiver for the daemon's alerts."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield received
    finally:
        server.shutdown()


def alerting_policy(pg, url: str) -> str:
    """The sandbox's policy with a webhook (and no WAL streamer to start and stop)."""
    policy = pg.root / "alerting.toml"
    text = pg.policy.read_text().replace("stream = true", "stream = false")
    policy.write_text(text + f'\n[alerts]\nwebhooks = [ {{ url = "{url}", format = "json" }} ]\n')
    if pg.user:
        shutil.chown(policy, pg.user)
    return str(policy)


def backup_json(pg, *config: str) -> tuple[dict, str]:
    proc = pg.run(*config, "backup", "db", "--json")
    return json.loads(proc.stdout)[0], proc.stderr


def status_of(pg) -> tuple[int, dict, str]:
    as_json = pg.run("status", "--json", check=False)
    text = pg.run("status", check=False)
    assert as_json.returncode == text.returncode
    db = next(a for a in json.loads(as_json.stdout)["assets"] if a["asset"] == "db")
    return as_json.returncode, db, text.stdout


def test_flipped_byte_is_named_by_both_backup_paths_and_status_is_degraded(pg):
    path, pages = fill_items(pg)

    # Negative control: the same cluster before the flip verifies clean on both paths
    clean, stderr = backup_json(pg)
    assert clean["labels"]["page_checksums"] == "verified"
    assert int(clean["labels"]["pages_checked"]) > pages  # catalogs and items, not nothing
    assert clean["labels"]["bad_pages"] == "0" and clean["bad_pages"] == []
    assert "WARNING" not in stderr
    clean_remote, stderr = backup_json(pg, "--config", remote_policy(pg))
    assert clean_remote["labels"]["method"] == "pg_basebackup"
    assert int(clean_remote["labels"]["pages_checked"]) > pages and clean_remote["bad_pages"] == []
    code, db, text = status_of(pg)
    assert db["bad_pages"] == 0 and "degraded" not in text
    assert code == 0, text

    block = pages // 2
    flip_byte(pg, path, block)

    # Local PGDATA: the backup completes, exit 0, and says which page of which table
    out, stderr = backup_json(pg)
    assert out["labels"]["bad_pages"] == "1"
    assert out["labels"]["bad_page_blocks"] == f"{path} block {block}"
    [bad] = out["bad_pages"]
    assert (bad["file"], bad["block"], bad["fork"]) == (path, block, "main")
    assert (bad["database"], bad["relation"]) == ("postgres", "public.items")
    assert "WARNING" in stderr and f"{path} block {block} = public.items in database postgres" in stderr

    # The snapshot as stored in the repository (another process reads it back)
    listed = json.loads(pg.run("snapshots", "--json").stdout)
    stored = next(s for s in listed if s["id"] == out["snapshot"])
    assert stored["labels"]["bad_pages"] == "1"
    assert stored["labels"]["bad_page_blocks"] == f"{path} block {block}"

    # status: degraded with the count, exit 1
    code, db, text = status_of(pg)
    assert code == 1
    assert db["bad_pages"] == 1
    assert any(b.startswith("degraded: 1 bad page") for b in db["breaches"])
    assert "degraded" in text

    # No pgdata: pg_basebackup alone would refuse ("checksum error occurred"); we complete
    # the backup and name the same page
    remote, stderr = backup_json(pg, "--config", remote_policy(pg))
    assert remote["labels"]["method"] == "pg_basebackup"
    [bad] = remote["bad_pages"]
    assert (bad["file"], bad["block"], bad["database"], bad["relation"]) == (
        path,
        block,
        "postgres",
        "public.items",
    )
    assert "WARNING" in stderr and "public.items" in stderr

    # The daemon alerts, once, naming the asset and the count
    with webhook() as received:
        pg.run("--config", alerting_policy(pg, received.url), "daemon", "--max-seconds", "1", "--no-http")
    fired = [m for m in received if m["condition"] == "bad-pages:db"]
    assert [m["status"] for m in fired] == ["firing"]
    assert "db: degraded: 1 bad page" in fired[0]["message"] and path in fired[0]["message"]

    # PostgreSQL's own checker agrees on the one bad page
    pg.cluster.stop()
    assert pg_checksums_verdict(pg) == [(path, block)]


def test_checksums_match_postgresql_and_a_torn_read_is_read_again(pg):
    """Every relation page of a stopped cluster verifies (PostgreSQL computed those
    checksums); a page that fails once but reads back fine is not reported."""
    path, _pages = fill_items(pg, rows=500)
    pg.cluster.stop()
    root: Path = pg.cluster.datadir
    checked = 0
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(file.relative_to(root))
        segment = relation_segment(rel)
        if segment is None:
            continue
        checker = FileChecker(rel, segment, start_lsn=1 << 63)
        data = file.read_bytes()
        for i in range(0, len(data), 5000):  # reads that do not align with pages
            checker.feed(data[i : i + 5000])
        assert checker.finish() == [], rel
        checked += checker.checked
    assert checked > 100

    good = (root / path).read_bytes()[PAGE_SIZE : 2 * PAGE_SIZE]
    torn = bytearray(good)
    torn[PAGE_SIZE - 1] ^= 0xFF
    assert page_checksum(bytes(torn), 1) != page_checksum(good, 1)
    data = good[:0] + bytes(PAGE_SIZE) + bytes(torn)  # block 0 new and zero, block 1 torn

    reread_good = FileChecker(path, 0, 1 << 63, reread=lambda i: good if i == 1 else None)
    reread_good.feed(data)
    assert reread_good.finish() == []

    still_bad = FileChecker(path, 0, 1 << 63, reread=lambda i: bytes(torn))
    still_bad.feed(data)
    [verdict] = still_bad.finish()
    assert verdict.block == 1 and "computed" in verdict.reason

    # A page written after the backup started is not checked (WAL replay rewrites it)
    skipped = FileChecker(path, 0, start_lsn=0)
    skipped.feed(data)
    assert skipped.finish() == [] and skipped.checked == 0


def test_pages_rewritten_during_the_backup_are_not_reported(pg):
    """No false alarms: updates and checkpoints rewriting pages while both backup paths read
    them (pages newer than the start LSN are skipped; a torn read would be read again)."""
    fill_items(pg, rows=20000)
    stop = threading.Event()
    writes = 0

    def write() -> None:
        nonlocal writes
        import psycopg

        with psycopg.connect(pg.cluster.dsn, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("update items set label = label || 'y' where id %% 50 = %s", (writes % 50,))
                if writes % 10 == 0:
                    conn.execute("checkpoint")  # flush the rewritten pages while we read
                writes += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        local, stderr = backup_json(pg)
        remote, _ = backup_json(pg, "--config", remote_policy(pg))
    finally:
        stop.set()
        writer.join(60)
    assert writes >= 10  # the writer really ran during the backups
    for out in (local, remote):
        assert out["labels"]["page_checksums"] == "verified" and int(out["labels"]["pages_checked"]) > 0
        assert out["bad_pages"] == [], out["bad_pages"]
    assert "WARNING" not in stderr
