"""Benchmark: full base backup time with and without page checksum verification.

    .venv/bin/python bench/pagecheck.py [--gb 1.0] [--before SRC_DIR]

One checksummed cluster (tests' sandbox), a table of about --gb, then a full backup into a
fresh repository with this tree's lifeboat and, if --before names another checkout's src/
directory, one with that version (archive_command pushes to both repositories). Also the
checker's own throughput over the table's first 1 GiB segment file.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.pgsandbox import destroy, make_sandbox

from lifeboat.assets.postgres.cluster import chown_tree
from lifeboat.assets.postgres.pagecheck import FileChecker, relation_segment


def second_repository(pg, name: str) -> Path:
    policy = pg.root / f"{name}.toml"
    text = pg.policy.read_text().replace(f"{pg.root}/repo", f"{pg.root}/repo-{name}")
    text = text.replace("keys/", f"keys-{name}/").replace("stream = true", "stream = false")
    policy.write_text(text)
    (pg.root / f"keys-{name}").mkdir()
    if pg.user:
        chown_tree(pg.root / f"keys-{name}", pg.user)
        chown_tree(policy, pg.user)
    pg.run("--config", str(policy), "init")
    return policy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--before", type=Path, help="src/ of the version to compare with")
    parser.add_argument("--runs", default="before,after,after,before", help="order of full backups")
    args = parser.parse_args()
    pg = make_sandbox()
    try:
        rows = int(args.gb * 5_400_000)
        started = time.monotonic()
        pg.sql(
            "create table big as select g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text)"
            f" || md5((g * 17)::text) as v from generate_series(1, {rows}) g"
        )
        pg.sql("checkpoint")
        size = pg.sql("select pg_database_size('postgres')")[0][0]
        print(f"database {size / 1e9:.2f} GB loaded in {time.monotonic() - started:.0f}s", flush=True)

        rel = pg.sql("select pg_relation_filepath('big')")[0][0]
        path = pg.cluster.datadir / rel
        checker = FileChecker(rel, relation_segment(rel) or 0, start_lsn=1 << 63)
        started = time.monotonic()
        with open(path, "rb", buffering=0) as fh:
            while block := fh.read(128 << 10):
                checker.feed(block)
        seconds = time.monotonic() - started
        assert not checker.finish()
        print(
            f"checker: {path.stat().st_size / seconds / 1e6:.0f} MB/s over {rel} "
            f"({path.stat().st_size / 2**30:.2f} GiB, {checker.checked} pages, {seconds:.1f}s)",
            flush=True,
        )

        runs = args.runs.split(",") if args.before else ["after"]
        versions = {f"{i}-{name}": second_repository(pg, f"{i}-{name}") for i, name in enumerate(runs)}
        for name, policy in versions.items():
            # each run's repository receives the WAL its backup waits for, and only it
            push = f"{sys.executable} -m lifeboat --config {policy} wal push --asset db %p"
            pg.sql(f"alter system set archive_command = '{push}'")
            pg.sql("select pg_reload_conf()")
            env = dict(pg.env)
            if name.endswith("-before"):
                env["PYTHONPATH"] = str(args.before)
            pg.env, saved = env, pg.env
            started = time.monotonic()
            cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
            out = pg.run("--config", str(policy), "backup", "db", "--json").stdout
            pg.env = saved
            seconds = time.monotonic() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_s = after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime
            verified = '"page_checksums": "verified"' in out or '"page_checksums":"verified"' in out
            rate = size / seconds / 1e6
            print(
                f"full backup {name}: {seconds:.1f}s ({rate:.0f} MB/s), {cpu_s:.1f}s CPU, pages: {verified}",
                flush=True,
            )
    finally:
        destroy(pg)


if __name__ == "__main__":
    main()
