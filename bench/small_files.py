"""Benchmark: many small files (0.5-4 KB, half random) — lifeboat vs restic.

    .venv/bin/python bench/small_files.py [--files 100000] [--workdir bench/out/small]

Phases for each tool, back to back on the same tree: first backup, unchanged second
backup, full restore. Prints seconds, the ratio restic/lifeboat (target >= 1.5) and the
peak RSS of each run (wait4 of the command, see common.timed). Caches cannot be dropped
on the shared machine, so both tools read a warm tree. Not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Run, apt_install, media_block, print_table, text_block, timed

ROOT = Path(__file__).resolve().parent.parent
LIFEBOAT = str(ROOT / ".venv" / "bin" / "lifeboat")
SEED = 18


def make_tree(src: Path, files: int) -> None:
    """``files`` files of 0.5-4 KB, every other one random bytes, the rest text-like, in
    nested directories of 100-1000 files each; the same tree for the same count."""
    marker = src / ".complete"
    if marker.exists() and marker.read_text() == str(files):
        return
    shutil.rmtree(src, ignore_errors=True)
    rng = random.Random(SEED)
    n = 0
    top = 0
    while n < files:
        sub = 0
        while n < files and sub < 10:
            d = src / f"t{top:03d}" / f"s{sub:02d}"
            d.mkdir(parents=True)
            for _ in range(min(rng.randint(100, 1000), files - n)):
                size = rng.randint(512, 4096)
                data = media_block(rng, size) if n % 2 else text_block(rng, size)
                (d / f"f{n:07d}.dat").write_bytes(data)
                n += 1
            sub += 1
        top += 1
    marker.write_text(str(files))


def write_policy(work: Path, src: Path) -> Path:
    policy = work / "lifeboat.toml"
    policy.write_text(f"""
[repository]
url = "file://{work / "lifeboat-repo"}"
keyfile = "backup.key"
recovery_key = "recovery.key"

[classes.standard]
rpo = "1d"
rto = "4h"

[assets.tree]
kind = "files"
class = "standard"
paths = ["{src}"]
""")
    return policy


def reset(work: Path) -> None:
    for d in ("lifeboat-repo", "restic-repo", "restic-cache", ".lifeboat", "restore-lb", "restore-restic"):
        shutil.rmtree(work / d, ignore_errors=True)
    for f in ("backup.key", "recovery.key"):
        (work / f).unlink(missing_ok=True)


def run_lifeboat(work: Path, policy: Path, baseline: Path | None = None) -> dict[str, Run]:
    """The three phases on a new repository; with ``baseline``, the lifeboat sources there
    (e.g. `git archive <commit> src | tar -x -C DIR`) run instead, for before/after rows."""
    for d in ("lifeboat-repo", "restore-lb"):
        shutil.rmtree(work / d, ignore_errors=True)
    for f in ("backup.key", "recovery.key"):
        (work / f).unlink(missing_ok=True)
    lb = [LIFEBOAT, "-c", str(policy)]
    env = None
    if baseline is not None:
        lb = [str(ROOT / ".venv" / "bin" / "python"), "-m", "lifeboat", "-c", str(policy)]
        env = {"PYTHONPATH": str(baseline / "src")}
    timed("lifeboat init", [*lb, "init"], env=env)
    return {
        "first backup": timed("lifeboat backup", [*lb, "backup", "tree"], env=env),
        "unchanged": timed("lifeboat backup 2", [*lb, "backup", "tree"], env=env),
        "restore": timed(
            "lifeboat restore", [*lb, "restore", "tree", "--target", str(work / "restore-lb")], env=env
        ),
    }


def run_restic(work: Path, src: Path) -> dict[str, Run]:
    restic = apt_install("restic", "restic")
    env = {
        "RESTIC_PASSWORD": os.environ.get("RESTIC_PASSWORD", "bench"),
        "RESTIC_REPOSITORY": str(work / "restic-repo"),
        "RESTIC_CACHE_DIR": str(work / "restic-cache"),
    }
    timed("restic init", [restic, "init"], env=env)
    return {
        "first backup": timed("restic backup", [restic, "backup", "-q", str(src)], env=env),
        "unchanged": timed("restic backup 2", [restic, "backup", "-q", str(src)], env=env),
        "restore": timed(
            "restic restore",
            [restic, "restore", "latest", "-q", "--target", str(work / "restore-restic")],
            env=env,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "small")
    parser.add_argument("--lifeboat-only", action="store_true", help="skip restic (for profiling rounds)")
    parser.add_argument("--baseline", type=Path, help="lifeboat sources to compare against (a 'before' row)")
    args = parser.parse_args()
    work = args.workdir.resolve()
    src = work / "src"
    print(f"generating {args.files} small files in {src} ...", flush=True)
    make_tree(src, args.files)
    reset(work)
    policy = write_policy(work, src)
    load = os.getloadavg()[0]
    before = run_lifeboat(work, policy, args.baseline) if args.baseline else {}
    lifeboat = run_lifeboat(work, policy)
    restic = {} if args.lifeboat_only else run_restic(work, src)
    rows = []
    for phase, lb in lifeboat.items():
        rs = restic.get(phase)
        old = before.get(phase)
        rows.append(
            [
                phase,
                f"{old.seconds:.1f} / {old.peak_rss_mb:.0f}" if old else "-",
                f"{lb.seconds:.1f}",
                f"{lb.peak_rss_mb:.0f}",
                f"{rs.seconds:.1f}" if rs else "-",
                f"{rs.peak_rss_mb:.0f}" if rs else "-",
                f"{rs.seconds / lb.seconds:.2f}x" if rs else "-",
            ]
        )
    print(f"{args.files} files, load average {load:.1f} at start ({os.cpu_count()} cores)")
    print_table(
        [
            "phase",
            "before s / RSS MB",
            "lifeboat s",
            "lifeboat RSS MB",
            "restic s",
            "restic RSS MB",
            "restic/lifeboat",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
