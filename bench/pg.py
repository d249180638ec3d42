"""Benchmark: lifeboat vs pgBackRest 2.45 vs `pg_basebackup -Ft -X none` on one cluster.

    .venv/bin/python bench/pg.py [--scale 150]

Full backup, 2% of pages changed, second backup, ~1 GB of WAL, restore to latest with
replay (start + promotion timed the same way for both tools). pgbench data gets a random
filler so compression does not flatter anyone. Runs as the postgres user when root.
Not a test: it takes a quarter of an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
import psycopg

from common import Run, apt_install, du, print_table, timed
from lifeboat.assets.postgres.cluster import PgCluster, chown_tree, free_port, run_as_user

ROOT = Path(__file__).resolve().parent.parent
USER = run_as_user()


def as_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", USER, "--", *cmd] if USER else cmd


def sql(dsn: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


def wait_archived(dsn: str, timeout: float = 600) -> None:
    segment = sql(dsn, "select pg_walfile_name(pg_current_wal_lsn())")[0][0]
    sql(dsn, "select pg_switch_wal()")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = sql(dsn, "select last_archived_wal from pg_stat_archiver")[0][0]
        if last and last >= segment:
            return
        time.sleep(0.5)
    raise SystemExit("archiving did not catch up")


def restore_and_promote(name: str, restore: list[str], datadir: Path, bin_dir: Path) -> Run:
    """Restore, then start and wait for promotion: the same stopwatch for both tools."""
    started = time.monotonic()
    first = timed(name, as_user(restore))
    port = free_port()
    cluster = PgCluster(datadir, port, datadir.parent / f"{datadir.name}-sock", bin_dir)
    cluster.socket_dir.mkdir(exist_ok=True)
    chown_tree(cluster.socket_dir, USER)
    with open(datadir / "postgresql.auto.conf", "a") as fh:
        fh.write(f"\nport = {port}\nunix_socket_directories = '{cluster.socket_dir}'\narchive_mode = off\n")
    cluster.start(timeout=3600)
    cluster.wait_promoted(timeout=3600)
    cluster.stop()
    return Run(name, time.monotonic() - started, first.peak_rss_mb, 0, first.output)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=150)
    parser.add_argument("--wal-gb", type=float, default=1.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory for --restore-only")
    parser.add_argument(
        "--restore-only", type=Path, metavar="WORKDIR", help="repeat only the restores of a kept run"
    )
    args = parser.parse_args()
    pgbackrest = apt_install("pgbackrest", "pgbackrest")
    if args.restore_only:
        restores(args.restore_only.resolve(), pgbackrest)
        return
    work = Path(tempfile.mkdtemp(prefix="lb-bench-pg-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    chown_tree(work, USER)
    cluster = PgCluster(work / "pgdata", free_port(), work / "sock")
    bin_dir = cluster.pg_bin
    policy = work / "lifeboat.toml"
    policy.write_text(f"""
[repository]
url = "file://{work}/lifeboat-repo"
keyfile = "backup.key"
recovery_key = "recovery.key"
[classes.c]
rpo = "1m"
rto = "1h"
[assets.db]
kind = "postgres"
class = "c"
pgdata = "{work}/pgdata"
dsn = "{cluster.dsn}"
""")
    brconf = work / "pgbackrest.conf"
    brconf.write_text(f"""[global]
repo1-path={work}/pgbackrest-repo
compress-type=zst
process-max=2
start-fast=y
log-level-console=warn
lock-path={work}/pgbackrest-lock
log-path={work}/pgbackrest-log
spool-path={work}/pgbackrest-spool

[bench]
pg1-path={work}/pgdata
pg1-port={cluster.port}
pg1-socket-path={work}/sock
""")
    chown_tree(work, USER)
    lb = [sys.executable, "-m", "lifeboat", "--config", str(policy)]
    br = [pgbackrest, f"--config={brconf}", "--stanza=bench"]
    timed("lifeboat init", as_user([*lb, "init"]))
    archive = f"{' '.join(lb)} wal push --asset db %p && {' '.join(br)} archive-push %p"
    cluster.initdb(
        "wal_level = replica",
        "archive_mode = on",
        f"archive_command = '{archive}'",
        "max_wal_size = 4GB",
        "shared_buffers = 512MB",
        "checkpoint_timeout = 15min",
    )
    cluster.start()
    dsn = cluster.dsn
    timed("stanza-create", as_user([*br, "stanza-create"]))
    print(f"loading pgbench scale {args.scale} with random filler ...", flush=True)
    pgbench = [str(bin_dir / "pgbench"), "-h", str(cluster.socket_dir), "-p", str(cluster.port)]
    timed("pgbench -i", as_user([*pgbench, "-i", "-I", "dtg", "-s", "1", "-q", "postgres"]))
    sql(dsn, "truncate pgbench_accounts")
    # tuned as update-heavy tables are, so an updated row stays on its page (HOT); with
    # fillfactor 100 PostgreSQL scatters new versions through the free-space map and "2%
    # of rows" rewrites most pages for every tool alike
    sql(dsn, "alter table pgbench_accounts set (fillfactor = 50)")
    sql(
        dsn,
        f"""insert into pgbench_accounts select aid, (aid - 1) / 100000 + 1, 0,
                 md5(random()::text) || md5(random()::text) || left(md5(random()::text), 20)
                 from generate_series(1, {args.scale * 100000}) aid""",
    )
    sql(dsn, f"insert into pgbench_branches select b, 0 from generate_series(2, {args.scale}) b")
    sql(
        dsn,
        "insert into pgbench_tellers select t, (t - 1) / 10 + 1, 0 "
        f"from generate_series(11, {args.scale * 10}) t",
    )
    timed("pgbench -i keys", as_user([*pgbench, "-i", "-I", "vp", "-q", "postgres"]))
    sql(dsn, "checkpoint")
    wait_archived(dsn)
    size = int(sql(dsn, "select pg_database_size('postgres')")[0][0])
    print(f"database: {size / 1e9:.2f} GB", flush=True)
    runs = {
        "full lifeboat": timed("lb full", as_user([*lb, "backup", "db"])),
        "full pgbackrest": timed("br full", as_user([*br, "--type=full", "backup"])),
        "full pg_basebackup": timed(
            "pg_basebackup",
            as_user(
                [
                    str(bin_dir / "pg_basebackup"),
                    "-h",
                    str(cluster.socket_dir),
                    "-p",
                    str(cluster.port),
                    "-Ft",
                    "-X",
                    "none",
                    "-D",
                    str(work / "basebackup"),
                ]
            ),
        ),
    }
    lb_before, br_before = du(work / "lifeboat-repo"), du(work / "pgbackrest-repo")
    pages = int(sql(dsn, "select pg_relation_size('pgbench_accounts') / 8192")[0][0])
    # 2% of the table's pages, every row on them (HOT: the new versions stay on the page)
    sql(
        dsn,
        "update pgbench_accounts set abalance = abalance + 1 where ((ctid::text::point)[0])::bigint % 50 = 0",
    )
    sql(dsn, "checkpoint")
    runs["incr lifeboat"] = timed("lb incr", as_user([*lb, "backup", "db", "--json"]))
    runs["incr pgbackrest"] = timed("br incr", as_user([*br, "--type=incr", "backup"]))
    # what each second backup itself stored (the repository deltas also hold archived WAL)
    lb_incr = json.loads(runs["incr lifeboat"].output)[0]["stats"]["stored_bytes"]
    info = json.loads(
        subprocess.run(
            as_user([*br, "info", "--output=json"]), capture_output=True, text=True, check=True
        ).stdout
    )
    br_incr = info[0]["backup"][-1]["info"]["repository"]["delta"]
    wal_both = (
        du(work / "lifeboat-repo") - lb_before - lb_incr,
        du(work / "pgbackrest-repo") - br_before - br_incr,
    )
    print(f"generating ~{args.wal_gb} GB of WAL with pgbench and measuring archive lag ...", flush=True)
    start_lsn = sql(dsn, "select pg_current_wal_lsn()")[0][0]
    lag = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1):
            row = sql(
                dsn,
                "select extract(epoch from now() - coalesce(last_archived_time, now())) "
                "from pg_stat_archiver",
            )[0][0]
            lag[0] = max(lag[0], float(row or 0))

    threading.Thread(target=sample, daemon=True).start()
    while True:
        subprocess.run(
            as_user([*pgbench, "-c", "2", "-j", "2", "-T", "20", "-n", "postgres"]),
            check=True,
            capture_output=True,
        )
        done = sql(dsn, f"select pg_wal_lsn_diff(pg_current_wal_lsn(), '{start_lsn}')")[0][0]
        if float(done) >= args.wal_gb * 1e9:
            break
    wait_archived(dsn, timeout=3600)
    stop.set()
    cluster.stop()
    runs.update(restores(work, pgbackrest))
    rows = [[name, f"{r.seconds:.1f}", f"{r.peak_rss_mb:.0f}"] for name, r in runs.items()]
    print_table(["step", "seconds", "peak RSS MB"], rows)
    s = {k: v.seconds for k, v in runs.items()}
    print(f"database {size / 1e9:.2f} GB, {pages} heap pages in pgbench_accounts")
    print(
        f"full backup: lifeboat {size / s['full lifeboat'] / 1e6:.0f} MB/s = "
        f"{s['full pgbackrest'] / s['full lifeboat']:.2f}x pgBackRest, "
        f"{s['full pg_basebackup'] / s['full lifeboat']:.2f}x pg_basebackup"
    )
    print(f"stored: lifeboat {lb_before / 1e6:.0f} MB, pgBackRest {br_before / 1e6:.0f} MB (full)")
    print(
        f"second backup stores: lifeboat {lb_incr / 1e6:.0f} MB vs pgBackRest incr {br_incr / 1e6:.0f} MB "
        f"= {lb_incr / max(br_incr, 1):.2f}x"
    )
    print(
        "restore to latest with replay: "
        f"{s['restore pgbackrest'] / s['restore lifeboat']:.2f}x pgBackRest speed"
    )
    print(f"max archive lag under pgbench: {lag[0]:.1f} s")
    print(
        f"WAL archived during the 2% update: lifeboat {wal_both[0] / 1e6:.0f} MB, "
        f"pgBackRest {wal_both[1] / 1e6:.0f} MB"
    )
    if args.keep:
        print(f"kept {work}: repeat the restores with --restore-only {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def restores(work: Path, pgbackrest: str) -> dict[str, Run]:
    """Restore to latest with each tool (the source cluster is stopped), timed the same way."""
    bin_dir = PgCluster(work / "pgdata", 0, work / "sock").pg_bin
    lb = [sys.executable, "-m", "lifeboat", "--config", str(work / "lifeboat.toml")]
    br = [pgbackrest, f"--config={work / 'pgbackrest.conf'}", "--stanza=bench"]
    for name in ("restore-lb", "restore-br"):
        shutil.rmtree(work / name, ignore_errors=True)
    runs = {
        "restore lifeboat": restore_and_promote(
            "lb restore",
            [*lb, "restore", "db", "--target", str(work / "restore-lb"), "--latest"],
            work / "restore-lb",
            bin_dir,
        ),
        "restore pgbackrest": restore_and_promote(
            "br restore", [*br, f"--pg1-path={work / 'restore-br'}", "restore"], work / "restore-br", bin_dir
        ),
    }
    print(runs["restore lifeboat"].output.strip()[-600:])
    lb_s, br_s = runs["restore lifeboat"].seconds, runs["restore pgbackrest"].seconds
    print(f"restore with replay: lifeboat {lb_s:.1f} s, pgBackRest {br_s:.1f} s = {br_s / lb_s:.2f}x")
    return runs


if __name__ == "__main__":
    main()
