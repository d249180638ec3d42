"""Benchmark: lifeboat vs pgBackRest 2.45 vs `pg_basebackup -Ft -X none` on one cluster.

    .venv/bin/python bench/pg.py [--scale 150] [--pairs 5] [--push-segments 200]
    .venv/bin/python bench/pg.py --push-only [--push-segments 200]

Full backup, 2% of pages changed, second backup, ~1 GB of WAL, restore to latest with
replay (start + promotion timed the same way for both tools, each restore after dropping
the page cache where allowed, median of --pairs pairs with the spread), and `wal push`
per segment in sync mode against `pgbackrest archive-push` (one process per segment, as
PostgreSQL's archiver runs them; the two tools push each segment in turn, the first to go
alternating). pgbench data gets a random filler so compression does not flatter anyone.
Runs as the postgres user when root. Not a test: it takes a quarter of an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
import psycopg

from common import Run, apt_install, drop_caches, du, print_table, timed
from lifeboat.assets.postgres.cluster import PgCluster, chown_tree, free_port, run_as_user
from lifeboat.assets.postgres.promote import wait_writable

ROOT = Path(__file__).resolve().parent.parent
USER = run_as_user()


def lifeboat_policy(work: Path, cluster: PgCluster) -> str:
    """The benches' policy: one postgres asset, a file:// repository in ``work``."""
    return f"""
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
"""


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
    # the pid file's status, as lifeboat's restore waits: a query polled during replay
    # holds a snapshot that replay's pruning records wait on (recovery conflicts)
    wait_writable(cluster, timeout=3600)
    seconds = time.monotonic() - started  # until it accepts writes, as lifeboat's restore is timed
    cluster.stop()
    return Run(name, seconds, first.peak_rss_mb, 0, first.output, first.cpu_seconds, first.system_seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=150)
    parser.add_argument("--wal-gb", type=float, default=1.0)
    parser.add_argument("--pairs", type=int, default=5, help="restore pairs (lifeboat, pgBackRest)")
    parser.add_argument("--push-segments", type=int, default=200, help="segments for the wal push row")
    parser.add_argument("--keep", action="store_true", help="keep the work directory for --restore-only")
    parser.add_argument(
        "--restore-only", type=Path, metavar="WORKDIR", help="repeat only the restores of a kept run"
    )
    parser.add_argument("--push-only", action="store_true", help="only the wal push row")
    parser.add_argument(
        "--baseline-src", type=Path, help="with --restore-only: also restore with this src/ (before/after)"
    )
    args = parser.parse_args()
    pgbackrest = apt_install("pgbackrest", "pgbackrest")
    # The commands run as the postgres user, who cannot write __pycache__ in this tree: without
    # this every lifeboat process would compile its own sources (~0.3 s), which an installed
    # package never does.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], check=True)
    if args.restore_only:
        restores(args.restore_only.resolve(), pgbackrest, args.pairs, args.baseline_src)
        return
    if args.push_only:
        push_bench(pgbackrest, args.push_segments)
        return
    work = Path(tempfile.mkdtemp(prefix="lb-bench-pg-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    chown_tree(work, USER)
    cluster = PgCluster(work / "pgdata", free_port(), work / "sock")
    bin_dir = cluster.pg_bin
    policy = work / "lifeboat.toml"
    policy.write_text(lifeboat_policy(work, cluster))
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
    runs.update(restores(work, pgbackrest, args.pairs))
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
    push_bench(pgbackrest, args.push_segments)


def lifeboat_restore_started(lb: list[str], datadir: Path, src: Path | None = None) -> Run:
    """lifeboat restores with --start: replay overlaps WAL staging (the background stager),
    so the restore itself starts the cluster and waits for promotion. Its own checks
    (pg_amcheck) are not part of the comparison: their step time is taken off. ``src``: run
    the lifeboat sources in that directory instead (a baseline checkout's src/)."""
    port = free_port()
    run = timed(
        "lb restore",
        as_user(
            [
                *lb,
                "restore",
                "db",
                "--target",
                str(datadir),
                "--latest",
                "--start",
                "--port",
                str(port),
                "--json",
            ]
        ),
        env={"PYTHONPATH": str(src)} if src else None,
    )
    out, _ = json.JSONDecoder().raw_decode(run.output[run.output.index("{") :])
    checks = float(out["steps"].get("checks", 0.0))
    PgCluster(datadir, port, datadir.parent / f".{datadir.name}.sock").stop()
    steps = json.dumps(out["steps"])
    return Run(
        "lb restore", run.seconds - checks, run.peak_rss_mb, 0, steps, run.cpu_seconds, run.system_seconds
    )


def restores(work: Path, pgbackrest: str, pairs: int = 5, baseline: Path | None = None) -> dict[str, Run]:
    """Restore to latest with each tool (the source cluster is stopped), timed the same way,
    ``pairs`` times; the median pair ratio is the row, with its spread. With ``baseline`` (a
    checkout's src/), each pair also restores with those sources first: before and after a
    change, measured back to back against the same pgBackRest runs."""
    bin_dir = PgCluster(work / "pgdata", 0, work / "sock").pg_bin
    lb = [sys.executable, "-m", "lifeboat", "--config", str(work / "lifeboat.toml")]
    br = [pgbackrest, f"--config={work / 'pgbackrest.conf'}", "--stanza=bench"]
    lb_runs, br_runs, base_runs = [], [], []
    for i in range(pairs):
        for name in ("restore-lb", "restore-br"):
            shutil.rmtree(work / name, ignore_errors=True)
        # each restore reads its repository cold, as after an outage: lifeboat's backup
        # leaves its packs out of the page cache, pgBackRest's leaves its files in it
        if baseline is not None:
            drop_caches()
            base_runs.append(lifeboat_restore_started(lb, work / "restore-lb", baseline))
            print(f"pair {i + 1}: baseline lifeboat {base_runs[-1].seconds:.1f} s ({base_runs[-1].output})")
            shutil.rmtree(work / "restore-lb", ignore_errors=True)
        drop_caches()
        lb_runs.append(lifeboat_restore_started(lb, work / "restore-lb"))
        drop_caches()
        br_runs.append(
            restore_and_promote(
                "br restore",
                [*br, f"--pg1-path={work / 'restore-br'}", "restore"],
                work / "restore-br",
                bin_dir,
            )
        )
        lb_s, br_s = lb_runs[-1].seconds, br_runs[-1].seconds
        # the restore commands' system CPU (not the servers'): on the VM these figures come
        # from, writing into memory freed more than a few seconds before cost 5-12 s per GB
        print(
            f"pair {i + 1}: lifeboat {lb_s:.1f} s ({lb_runs[-1].output}; system CPU "
            f"{lb_runs[-1].system_seconds:.1f} s), pgBackRest {br_s:.1f} s (system CPU "
            f"{br_runs[-1].system_seconds:.1f} s) = {br_s / lb_s:.2f}x",
            flush=True,
        )
    ratios = sorted(b.seconds / a.seconds for a, b in zip(lb_runs, br_runs, strict=True))
    lb_med = statistics.median(r.seconds for r in lb_runs)
    br_med = statistics.median(r.seconds for r in br_runs)
    print(
        f"restore with replay, median of {pairs} pairs: lifeboat {lb_med:.1f} s, pgBackRest {br_med:.1f} s; "
        f"ratio {statistics.median(ratios):.2f}x pgBackRest speed (spread {ratios[0]:.2f}-{ratios[-1]:.2f}x)"
    )
    if base_runs:
        base_ratios = sorted(b.seconds / a.seconds for a, b in zip(base_runs, br_runs, strict=True))
        print(
            f"baseline ({baseline}), median of {pairs} pairs: "
            f"{statistics.median(r.seconds for r in base_runs):.1f} s; ratio "
            f"{statistics.median(base_ratios):.2f}x pgBackRest speed "
            f"(spread {base_ratios[0]:.2f}-{base_ratios[-1]:.2f}x)"
        )
    lb_mid = sorted(lb_runs, key=lambda r: r.seconds)[len(lb_runs) // 2]
    br_mid = sorted(br_runs, key=lambda r: r.seconds)[len(br_runs) // 2]
    return {"restore lifeboat": lb_mid, "restore pgbackrest": br_mid}


# Each push timed alone (date before and after, outside the push), one process per segment
# as PostgreSQL's archiver runs archive_command in sync mode.
PUSH_LOOP = (
    'cmd=$1; shift; for f in "$@"; do s=$(date +%s%N); $cmd "$f" >/dev/null || exit 1; '
    "e=$(date +%s%N); echo $((e - s)); done"
)
# Both tools push each segment in turn, the first to go alternating: on this VM, writing
# into page-cache pages the guest has never touched costs up to 100 us a page, so the tool
# that ran its 200 pushes first paid for pages the other then reused (one tool's 4.3 MB
# pack took 120 ms to write, the next one 1 ms).
PAIRED_PUSH_LOOP = (
    'a=$1; b=$2; shift 2; n=0; for f in "$@"; do n=$((n + 1)); '
    "if [ $((n % 2)) -eq 1 ]; then first=$a; second=$b; else first=$b; second=$a; fi; "
    's=$(date +%s%N); $first "$f" >/dev/null || exit 1; m=$(date +%s%N); '
    '$second "$f" >/dev/null || exit 1; e=$(date +%s%N); '
    "if [ $((n % 2)) -eq 1 ]; then echo $((m - s)) $((e - m)); else echo $((e - m)) $((m - s)); fi; done"
)


def push_times(command: str, files: list[Path]) -> list[float]:
    proc = subprocess.run(
        as_user(["sh", "-c", PUSH_LOOP, "sh", command, *map(str, files)]),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"push failed: {proc.stderr[-2000:]}")
    return [int(line) / 1e9 for line in proc.stdout.split()]


def paired_push_times(first: str, second: str, files: list[Path]) -> tuple[list[float], list[float]]:
    """Each segment pushed by both commands, alternately first: (times of ``first``, of
    ``second``), segment by segment."""
    proc = subprocess.run(
        as_user(["sh", "-c", PAIRED_PUSH_LOOP, "sh", first, second, *map(str, files)]),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"push failed: {proc.stderr[-2000:]}")
    pairs = [line.split() for line in proc.stdout.splitlines() if line.strip()]
    return [int(a) / 1e9 for a, _ in pairs], [int(b) / 1e9 for _, b in pairs]


def import_time(cmd: list[str]) -> tuple[float, list[tuple[float, str]]]:
    """`python -X importtime` of one command: total import seconds, heaviest top-level imports."""
    proc = subprocess.run(as_user(cmd), capture_output=True, text=True)
    top: list[tuple[float, str]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if name[1:2] != " ":  # a top-level import (nested ones are indented further)
            top.append((int(cumulative) / 1e6, name.strip()))
    return sum(t for t, _ in top), sorted(top, reverse=True)[:8]


def push_bench(pgbackrest: str, segments: int) -> None:
    """`wal push` vs `pgbackrest archive-push`, sync mode, ``segments`` real segments of
    random data from a fresh cluster (copied out by its archive_command)."""
    work = Path(tempfile.mkdtemp(prefix="lb-bench-push-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    cluster = PgCluster(work / "pgdata", free_port(), work / "sock")
    copies = work / "segments"
    copies.mkdir()
    (work / "lifeboat.toml").write_text(lifeboat_policy(work, cluster))
    (work / "pgbackrest.conf").write_text(f"""[global]
repo1-path={work}/pgbackrest-repo
compress-type=zst
log-level-console=warn
lock-path={work}/pgbackrest-lock
log-path={work}/pgbackrest-log

[bench]
pg1-path={work}/pgdata
pg1-port={cluster.port}
pg1-socket-path={work}/sock
""")
    chown_tree(work, USER)
    lb = f"{sys.executable} -m lifeboat --config {work}/lifeboat.toml"
    br = f"{pgbackrest} --config={work}/pgbackrest.conf --stanza=bench"
    try:
        timed("lifeboat init", as_user([*lb.split(), "init"]))
        cluster.initdb(
            "wal_level = replica",
            "archive_mode = on",
            f"archive_command = 'cp %p {copies}/%f'",
            "max_wal_size = 4GB",
        )
        cluster.start()
        timed("stanza-create", as_user([*br.split(), "stanza-create"]))
        sql(cluster.dsn, "create table filler (x text)")
        print(f"writing {segments} segments of random rows ...", flush=True)
        while len(list(copies.glob("0*"))) < segments + 1:
            # ~16 MB of incompressible rows: one segment each
            sql(
                cluster.dsn,
                "insert into filler select md5(random()::text) || md5(random()::text) "
                "from generate_series(1, 150000)",
            )
            wait_archived(cluster.dsn)
        cluster.stop()
        files = sorted(p for p in copies.glob("0*") if len(p.name) == 24)[1 : segments + 1]
        lb_t, br_t = paired_push_times(f"{lb} wal push --asset db", f"{br} archive-push", files)
        total, top = import_time(
            [
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "lifeboat",
                "--config",
                f"{work}/lifeboat.toml",
                "wal",
                "push",
                "--asset",
                "db",
                str(files[0]),
            ]
        )
        bare = push_times(f"{sys.executable} -c pass", files[:20])
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)

    def line(name: str, t: list[float]) -> str:
        q = statistics.quantiles(t, n=10) if len(t) >= 2 else [t[0]] * 9
        return (
            f"{name}: median {statistics.median(t) * 1000:.0f} ms per segment "
            f"(p10 {q[0] * 1000:.0f}, p90 {q[-1] * 1000:.0f}), total {sum(t):.1f} s"
        )

    print(f"wal push, sync mode, {len(files)} segments, one process per segment, the tools in turn:")
    print("  " + line("lifeboat wal push", lb_t))
    print("  " + line("pgbackrest archive-push", br_t))
    paired = [a / b for a, b in zip(lb_t, br_t, strict=True)]
    print(
        f"  lifeboat / pgBackRest time per segment: {statistics.median(lb_t) / statistics.median(br_t):.2f}x "
        f"(median of the per-segment ratios: {statistics.median(paired):.2f}x)"
    )
    print(
        f"  python start-up alone (python -c pass): median {statistics.median(bare) * 1000:.0f} ms; "
        f"lifeboat's imports (-X importtime): {total * 1000:.0f} ms, heaviest: "
        + ", ".join(f"{n} {t * 1000:.0f} ms" for t, n in top)
    )


if __name__ == "__main__":
    main()
