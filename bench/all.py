"""Run every benchmark in turn (what `make bench` does); each one's output also goes to
bench/out/latest/NAME.txt, headed by the date and the command.

    .venv/bin/python bench/all.py [--quick] [--only NAME ...] [--skip NAME ...]

Full size by default (hours on 2 cores). ``--quick`` runs each at a small scale, one run
per row: enough to see every bench work end to end, not figures to quote. A bench that
fails does not stop the others; the exit status says whether any failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PY = sys.executable

# name: (full-size arguments, --quick arguments). New benches (many small files, cost with
# history, ...) add their line here.
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "repo": ([], ["--size-gb", "0.1", "--runs", "1"]),
    "repo-s3": (["--s3"], ["--s3", "--size-gb", "0.1", "--runs", "1"]),
    "objects": ([], ["--objects", "500", "--size-gb", "0.1", "--runs", "1"]),
    "pg": ([], ["--scale", "10", "--wal-gb", "0.1"]),
    "pagecheck": ([], ["--gb", "0.1"]),
    "shards": ([], ["--objects", "500"]),
    "retention_cost": ([], []),
    "small_files": ([], ["--files", "5000"]),
    "small_files_1m": (["--files", "1000000"], ["--files", "20000"]),
    # a keys asset of 30,000 files, in a work dir of its own (a tree of another size is made anew)
    "small_files_keys": (
        ["--files", "30000", "--no-files", "--no-objects", "--keys", "--workdir", "bench/out/small-keys"],
        ["--files", "2000", "--no-files", "--no-objects", "--keys", "--workdir", "bench/out/small-keys"],
    ),
    "history": ([], ["--counts", "1,100", "--runs", "1"]),
    "startup": ([], ["--runs", "3"]),
}
# names that run another bench's script with other arguments
SCRIPT = {"repo-s3": "repo", "small_files_1m": "small_files", "small_files_keys": "small_files"}


def run(name: str, argv: list[str], out: Path) -> bool:
    command = [PY, str(BENCH / f"{SCRIPT.get(name, name)}.py"), *argv]
    shown = " ".join(["python", f"bench/{SCRIPT.get(name, name)}.py", *argv])
    header = f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores: {shown}\n"
    print(f"\n== {name}: {shown}", flush=True)
    started = time.monotonic()
    with (out / f"{name}.txt").open("w") as log:
        log.write(header)
        log.flush()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        proc.wait()
        footer = f"# exit {proc.returncode} after {time.monotonic() - started:.0f} s\n"
        log.write(footer)
    print(footer, end="", flush=True)
    return proc.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small scale, one run: a smoke run")
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    parser.add_argument("--skip", nargs="+", choices=list(BENCHES), default=[])
    parser.add_argument("--out", type=Path, default=BENCH / "out" / "latest")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    failed = [
        name
        for name in args.only
        if name not in args.skip and not run(name, BENCHES[name][1 if args.quick else 0], args.out)
    ]
    print(f"\noutputs in {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
