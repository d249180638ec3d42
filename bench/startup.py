"""Benchmark: the start-up of the commands that run most often.

    .venv/bin/python bench/startup.py [--runs 21] [--workdir bench/out/startup]

PostgreSQL runs `wal push` (archive_command) and `wal fetch` (restore_command) once per
WAL segment, monitoring polls `status` and scripts list `snapshots`: for all of them the
interpreter's start-up and imports are most of the cost. Each command runs once to warm
the caches a real host has warm (the page cache, the sealed policy slice in the state dir),
then ``--runs`` times; the table gives the median wall time and CPU time (user + system
of the command and its children) with their range, and the peak RSS. A local repository
with one PostgreSQL asset (no server: push and fetch need none; `status` finds none and
says so) and a files asset with one snapshot; `status` again under a policy of the files
asset alone (no PostgreSQL driver to import). Not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Run, machine, print_table, spread, timed

ROOT = Path(__file__).resolve().parent.parent
LIFEBOAT = str(ROOT / ".venv" / "bin" / "lifeboat")
SEGMENT_BYTES = 64 * 1024  # what the push reads and stores does not matter here: its start-up does


POSTGRES_ASSET = """[assets.db]
kind = "postgres"
class = "standard"
dsn = "host=/nonexistent dbname=postgres"
"""


def write_policy(work: Path, name: str = "lifeboat.toml", postgres: bool = True) -> Path:
    """The policy; without ``postgres``, its files asset alone (status then asks no server,
    and imports no PostgreSQL driver)."""
    policy = work / name
    text = f"""
[repository]
url = "file://{work / "repo"}"
keyfile = "backup.key"
recovery_key = "recovery.key"

[state]
dir = "{work / "state"}"

[classes.standard]
rpo = "1d"
rto = "4h"

{POSTGRES_ASSET if postgres else ""}
[assets.docs]
kind = "files"
class = "standard"
paths = ["{work / "docs"}"]
"""
    policy.write_text(text)
    return policy


def segment_name(n: int) -> str:
    return f"00000001{0:08X}{n:08X}"


def prepare(work: Path) -> list[str]:
    """A repository with one files snapshot; the command prefix that uses it."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "docs").mkdir(parents=True)
    (work / "docs" / "note.txt").write_text("a file to back up\n")
    lb = [LIFEBOAT, "--config", str(write_policy(work))]
    timed("init", [*lb, "init", "--recovery-key-out", str(work / "recovery.key")])
    timed("backup", [*lb, "backup", "docs"])
    return lb


# a fetch of a missing segment exits 1, as it must for PostgreSQL; `status` exits 1 while
# an asset breaches its targets: the benchmark measures them all the same
OK_CODES = {"wal fetch (missing segment)": (1,), "status --json": (0, 1)}


def commands(lb: list[str], work: Path) -> dict[str, list[str]]:
    """Each measured command."""
    key = ["--recovery-key", str(work / "recovery.key"), "--asset", "db"]
    fetched = str(work / "fetched")
    files_only = [LIFEBOAT, "--config", str(write_policy(work, "files-only.toml", postgres=False))]
    return {
        "lifeboat --version": [LIFEBOAT, "--version"],
        "wal push (64 KB segment)": [*lb, "wal", "push", "--asset", "db", str(work / "segment")],
        "wal fetch (archived segment)": [*lb, "wal", "fetch", segment_name(1), fetched, *key],
        "wal fetch (missing segment)": [*lb, "wal", "fetch", segment_name(999), fetched, *key],
        "snapshots --json": [*lb, "snapshots", "--json"],
        "snapshots (table)": [*lb, "snapshots"],
        "status --json": [*lb, "status", "--json"],
        "status --json (files asset only)": [*files_only, "status", "--json"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "startup")
    args = parser.parse_args()
    work = args.workdir.resolve()
    lb = prepare(work)
    segment = work / "segment"
    segment.write_bytes(os.urandom(SEGMENT_BYTES))
    print(f"start-up of frequent commands, {args.runs} runs each after a warm-up; {machine()}")
    rows = []
    for name, cmd in commands(lb, work).items():
        runs: list[Run] = []
        for i in range(args.runs + 1):
            if "push" in name:  # a new segment each time, as PostgreSQL archives them
                os.replace(segment, segment := work / segment_name(i + 1))
                cmd = [*lb, "wal", "push", "--asset", "db", str(segment)]
            run = timed(name, cmd, ok_codes=OK_CODES.get(name, (0,)))
            if i:  # the first run warms what a real host has warm
                runs.append(run)
        walls = [r.seconds * 1000 for r in runs]
        cpus = [r.cpu_seconds * 1000 for r in runs]
        rss = max(r.peak_rss_mb for r in runs)
        rows.append([name, spread(walls, ".0f"), spread(cpus, ".0f"), f"{rss:.0f}"])
    print_table(["command", "wall ms", "CPU ms", "peak RSS MB"], rows)


if __name__ == "__main__":
    main()
