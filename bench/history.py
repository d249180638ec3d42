"""Benchmark: the cost of history. Backup, `snapshots`, `check` and a restore, timed through
the real CLI on a file:// repository holding 1, 1,000 and 10,000 snapshots.

    .venv/bin/python bench/history.py [--counts 1,1000,10000] [--runs 3] [--workdir DIR]
                                      [--profile]

The history is synthetic, written in-process through the repository API so that 10,000
snapshots take minutes, not a year: each synthetic snapshot of the benchmarked asset has its
own small data blob and tree blob, packed and indexed as a small hourly backup would leave
them (two small packs and an index file), with parent links and times an hour apart; the
index is then consolidated as backups past the threshold do, and (unless ``--no-prune``)
`prune` repacks the small packs as the daemon's daily prune would. The measured commands then run
against that repository: `backup` of a small tree (200 files, 2% changed before each run),
`snapshots --json`, `snapshots` (the table a person reads), `check` (structure, with the
backup key: the daemon's routine check), and `restore` of the latest snapshot with the
recovery key. Each figure is the median of ``--runs`` runs, CPU time (user + system:
steadier on a shared machine) and wall time, with its ratio to the same command at the
smallest count (target <= 1.5x).
``--profile`` runs each command once more at the largest count under cProfile and prints
the top functions by cumulative time.

Not a test: run by hand; the machine is shared, so compare ratios within one run.

Last run (2026-12-06 23:58 UTC, `--counts 1,10000 --runs 3 --reuse` on 2 cores, at
0a31e1f, second of two rounds alternated with 4eab528 on a copy of the same repositories;
the 1,000 column from a `--counts 1,1000,10000` run just before: file:// repository, pruned
history, CPU seconds, median of 3, ratio to 1 snapshot):

    command          1 snapshot   1,000           10,000
    backup           0.30 s       0.30 s (1.02x)  0.36 s (1.23x)  the newest judged, not all
    snapshots        0.10 s       0.13 s (1.33x)  0.26 s (2.53x)  10,000 cached headers decoded,
    snapshots table  0.11 s       0.13 s (1.09x)  0.28 s (2.58x)  judged and printed
    check            0.29 s       0.32 s (1.07x)  0.59 s (2.01x)  every header read again
    restore          0.32 s       0.33 s (1.00x)  0.39 s (1.22x)

4eab528 in the same rounds: 0.37-0.40 / 0.38 / 0.42-0.44 / 0.72-0.75 / 0.39-0.41 s. What
changed (1350200, 0a31e1f): the first listing after a backup wrote the whole 6.9 MB header
cache again (now only a recent file beside it, repo/snapshot_cache.py SealedRecords); the
cache holds a list per header, not five objects (4.7 MB, parsed in half the time); cached
headers are not checked field by field again; the local listing uses scandir and the
entry's stat; the table is padded column by column and written past rich. What is left at
10,000 (~0.17 s of `snapshots`): listing and stat-ing 10,000 headers (~30 ms), parsing the
cache (~35 ms), building and judging 10,000 snapshots (~70 ms) and printing them.

Earlier: at 4319f72 (07:23 UTC) 1.27x / 3.58x / 3.47x / 2.54x / 1.27x; at dfe64dd
(2026-12-05): 1.33x / 3.83x / 3.91x / 2.56x / 1.41x.

The 1-snapshot figures are the commands' start-up (`snapshots` takes the fast path of
cli/entry.py). Before dfe64dd, every snapshot of the summary was judged to choose one:
backup 1.50x, restore 1.43x (2026-12-05, --reuse). On 2026-12-03, before the fast path and
the summary: 1.67x / 2.31x / 4.47x / 1.38x for backup / snapshots / check / restore.
"""

from __future__ import annotations

import argparse
import os
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import orjson

from common import print_table
from lifeboat.crypto.keys import load_backup_key
from lifeboat.repo import Repository
from lifeboat.repo.backup import BlobWriter
from lifeboat.repo.consolidate import consolidate_indexes
from lifeboat.repo.format import BLOB_TREE, snapshot_name
from lifeboat.repo.model import SnapshotInfo, SnapshotStats
from lifeboat.repo.snapshots import encode_snapshot
from lifeboat.storage import open_storage

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
FILES = 200


def write_policy(work: Path) -> Path:
    policy = work / "lifeboat.toml"
    policy.write_text(f"""
[repository]
url = "file://{work / "repo"}"
keyfile = "keys/backup.key"

[deployment]
mode = "development"

[classes.standard]
rpo = "1h"
rto = "1h"
retention = {{ last = 100000 }}

[assets.app]
kind = "files"
class = "standard"
paths = ["{work / "source"}"]
""")
    return policy


def make_source(src: Path) -> None:
    rng = random.Random(5)
    for i in range(FILES):
        d = src / f"d{i // 50}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:03d}.txt").write_bytes(rng.randbytes(rng.randrange(2_000, 40_000)))


def change_two_percent(src: Path, run: int) -> None:
    rng = random.Random(1000 + run)
    files = sorted(src.rglob("*.txt"))
    for path in rng.sample(files, max(1, len(files) // 50)):
        path.write_bytes(rng.randbytes(rng.randrange(2_000, 40_000)))


def lifeboat(policy: Path, *args: str) -> list[str]:
    return [PYTHON, "-m", "lifeboat", "--config", str(policy), *args]


def synthesize(work: Path, count: int) -> None:
    """``count`` snapshots of asset ``app`` an hour apart, ending an hour ago."""
    storage = open_storage(f"file://{work / 'repo'}")
    key = load_backup_key(work / "keys" / "backup.key")
    repo = Repository.open(storage, backup_key=key, cache_dir=work / "gen-cache")
    writer = BlobWriter(repo, None, workers=2)
    rng = random.Random(count)
    start = datetime.now(UTC) - timedelta(hours=count + 1)
    parent = None
    try:
        for i in range(count):
            data = rng.randbytes(3000)
            chunk = writer.store(data)
            entry = {"path": "hour.txt", "type": "file", "size": len(data), "chunks": [chunk]}
            tree = writer.store(orjson.dumps({"entries": [entry]}), BLOB_TREE)
            writer.finish()  # a small backup's packs and index, as real hourly runs leave them
            info = SnapshotInfo(
                id="",
                asset="app",
                kind="files",
                time=start + timedelta(hours=i),
                host="bench",
                labels={},
                stats=SnapshotStats(files=1, bytes=len(data), chunks=1, new_chunks=1),
                tree=[tree],
                key_id=repo.key_id,
                parent=parent,
            )
            snapshot_id, raw = encode_snapshot(info, repo.metadata)
            storage.put(snapshot_name(snapshot_id), raw)
            parent = snapshot_id
    finally:
        writer.close()
    consolidate_indexes(repo)  # what the backups past the threshold would have done
    storage.close()


def prepare(base: Path, count: int, reuse: bool, prune: bool) -> Path:
    work = base / f"n{count}"
    if reuse and (work / "prepared").exists():
        return work / "lifeboat.toml"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    make_source(work / "source")
    policy = write_policy(work)
    # initialised (its writer issued) before the synthetic history begins: the trust model
    # refuses a snapshot signed before its writer was issued
    before_history = {**os.environ, "LIFEBOAT_CLOCK_OFFSET": str(-(count + 2) * 3600)}
    subprocess.run(
        lifeboat(policy, "init", "--recovery-key-out", str(work / "recovery.key")),
        check=True,
        capture_output=True,
        env=before_history,
    )
    started = time.monotonic()
    synthesize(work, count - 1)
    subprocess.run(lifeboat(policy, "backup", "app"), check=True, capture_output=True)  # snapshot N
    if prune:  # as the daemon's daily forget + prune leaves it: small packs repacked
        key = str(work / "recovery.key")
        subprocess.run(lifeboat(policy, "prune", "--recovery-key", key), check=True, capture_output=True)
    print(f"  {count} snapshots prepared in {time.monotonic() - started:.1f} s", flush=True)
    (work / "prepared").touch()
    return policy


def commands(policy: Path, run: int) -> dict[str, list[str]]:
    work = policy.parent
    target = work / f"restored-{run}"
    shutil.rmtree(target, ignore_errors=True)
    key = str(work / "recovery.key")
    return {
        "backup": lifeboat(policy, "backup", "app"),
        "snapshots": lifeboat(policy, "snapshots", "--json"),
        "snapshots table": lifeboat(policy, "snapshots"),  # what a person types: one line a snapshot
        "check": lifeboat(policy, "check"),
        "restore": lifeboat(policy, "restore", "app", "--target", str(target), "--recovery-key", key),
    }


def cpu_timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one command. On a shared machine
    the CPU time is the steadier figure: waiting for a core does not count."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {out.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def measure(policy: Path, runs: int) -> dict[str, tuple[float, float]]:
    times: dict[str, list[tuple[float, float]]] = {}
    for run in range(runs):
        change_two_percent(policy.parent / "source", run)
        for name, cmd in commands(policy, run).items():
            times.setdefault(name, []).append(cpu_timed(cmd))
    return {
        name: (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
        for name, values in times.items()
    }


def profile(policy: Path, top: int = 12) -> None:
    for name, cmd in commands(policy, 99).items():
        out = policy.parent / f"{name}.prof"
        subprocess.run([cmd[0], "-m", "cProfile", "-o", str(out), *cmd[1:]], check=True, capture_output=True)
        print(f"\n--- {name}: top {top} by cumulative time (lifeboat functions)")
        stats = pstats.Stats(str(out))
        stats.sort_stats("cumulative").print_stats("lifeboat", top)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="1,1000,10000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-prune", action="store_true", help="leave every small pack of the history")
    parser.add_argument("--reuse", action="store_true", help="reuse histories already in --workdir")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    base = (args.workdir or Path(tempfile.mkdtemp(prefix="bench-history-"))).resolve()  # the policy names it
    os.environ.setdefault("LIFEBOAT_ACTOR", "bench")
    results: dict[int, dict[str, tuple[float, float]]] = {}
    policies = {}
    for count in counts:
        print(f"history of {count} snapshots", flush=True)
        policies[count] = prepare(base, count, args.reuse, not args.no_prune)
        results[count] = measure(policies[count], args.runs)
    first = results[counts[0]]
    for label, pick in (("CPU (user+sys)", 1), ("wall", 0)):
        rows = []
        for op in first:
            row = [op]
            for count in counts:
                seconds = results[count][op][pick]
                row.append(f"{seconds:.2f} s ({seconds / first[op][pick]:.2f}x)")
            rows.append(row)
        print(f"\n{label}, median of {args.runs} runs, ratio to {counts[0]} snapshot(s):")
        print_table(["command", *[f"{c} snapshots" for c in counts]], rows)
    if args.profile:
        profile(policies[counts[-1]])


if __name__ == "__main__":
    main()
