"""Benchmark: lifeboat vs restic vs `tar | zstd -3` on a mixed 2 GB tree, then 2% changed.

    .venv/bin/python bench/repo.py [--size-gb 2] [--workdir bench/out/repo]

Not a test: run by hand on the 2-core machine; prints throughput ratios, stored bytes,
peak RSS. Data has realistic entropy (text-like compressible files, random media-like
small files) so compression does not flatter anyone.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import apt_install, du, media_block, print_table, text_block, timed

ROOT = Path(__file__).resolve().parent.parent
LIFEBOAT = str(ROOT / ".venv" / "bin" / "lifeboat")


def make_data(src: Path, size: int) -> None:
    if (src / ".complete").exists():
        return
    shutil.rmtree(src, ignore_errors=True)
    rng = random.Random(7)
    big = src / "big"
    big.mkdir(parents=True)
    big_total = int(size * 0.7)
    for i in range(2):
        with open(big / f"dataset-{i}.log", "wb") as fh:
            remaining = big_total // 2
            while remaining > 0:
                block = text_block(rng, min(4 << 20, remaining))
                fh.write(block)
                remaining -= len(block)
    small_total = size - big_total
    n = 0
    written = 0
    while written < small_total:
        d = src / "small" / f"d{n // 500:03d}"
        d.mkdir(parents=True, exist_ok=True)
        fsize = int(rng.lognormvariate(11, 1.2)) % (2 << 20) + 100
        data = media_block(rng, fsize) if n % 3 else text_block(rng, fsize)
        (d / f"f{n:05d}.bin").write_bytes(data)
        written += fsize
        n += 1
    (src / ".complete").write_text(str(n))


def change_two_percent(src: Path, size: int) -> None:
    rng = random.Random(99)
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.name != ".complete")
    budget = size * 0.02
    big = [p for p in files if p.stat().st_size > 100 << 20]
    for path in big:  # in-place page-like updates in the big files: 1% of the data
        fsize = path.stat().st_size
        with open(path, "r+b") as fh:
            for _ in range(int(fsize * 0.01 / (64 << 10))):
                fh.seek(rng.randrange(0, fsize - (64 << 10)))
                fh.write(text_block(rng, 64 << 10))
        budget -= fsize * 0.01
    small = [p for p in files if p not in big]
    rng.shuffle(small)
    for path in small:
        if budget <= 0:
            break
        data = media_block(rng, path.stat().st_size)
        path.write_bytes(data)
        budget -= len(data)


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "repo")
    args = parser.parse_args()
    size = int(args.size_gb * (1 << 30))
    work = args.workdir.resolve()
    src = work / "src"
    print(f"generating {args.size_gb} GB of mixed data in {src} ...", flush=True)
    make_data(src, size)
    restic = apt_install("restic", "restic")
    zstd = apt_install("zstd", "zstd")
    for d in ("lifeboat-repo", "restic-repo", ".lifeboat"):
        shutil.rmtree(work / d, ignore_errors=True)
    for f in ("backup.key", "recovery.key", "tree.tar.zst"):
        (work / f).unlink(missing_ok=True)
    policy = write_policy(work, src)
    env = {
        "RESTIC_PASSWORD": "bench",
        "RESTIC_REPOSITORY": str(work / "restic-repo"),
        "RESTIC_CACHE_DIR": str(work / "restic-cache"),
    }
    timed("lifeboat init", [LIFEBOAT, "-c", str(policy), "init"])
    timed("restic init", [restic, "init"], env=env)
    os.sync()
    results = []
    results.append(
        (
            "first",
            "lifeboat",
            timed("lifeboat backup", [LIFEBOAT, "-c", str(policy), "backup", "tree"]),
            du(work / "lifeboat-repo"),
        )
    )
    results.append(
        (
            "first",
            "restic",
            timed("restic backup", [restic, "backup", "-q", str(src)], env=env),
            du(work / "restic-repo"),
        )
    )
    results.append(
        (
            "first",
            "tar|zstd -3",
            timed("tar", f"tar -C {src} -cf - . | {zstd} -3 -T0 -q -o {work / 'tree.tar.zst'}", shell=True),
            (work / "tree.tar.zst").stat().st_size,
        )
    )
    change_two_percent(src, size)
    before_lb, before_restic = du(work / "lifeboat-repo"), du(work / "restic-repo")
    results.append(
        (
            "second",
            "lifeboat",
            timed("lifeboat backup 2", [LIFEBOAT, "-c", str(policy), "backup", "tree"]),
            du(work / "lifeboat-repo") - before_lb,
        )
    )
    results.append(
        (
            "second",
            "restic",
            timed("restic backup 2", [restic, "backup", "-q", str(src)], env=env),
            du(work / "restic-repo") - before_restic,
        )
    )
    rows = []
    for phase, tool, run, stored in results:
        rows.append(
            [
                phase,
                tool,
                f"{run.seconds:.1f}",
                f"{size / run.seconds / 1e6:.0f}",
                f"{stored / 1e6:.0f}",
                f"{run.peak_rss_mb:.0f}",
            ]
        )
    print_table(["backup", "tool", "seconds", "MB/s", "stored MB", "peak RSS MB"], rows)
    secs = {(p, t): r.seconds for p, t, r, _ in results}
    lb1, lb2 = secs[("first", "lifeboat")], secs[("second", "lifeboat")]
    print(
        f"first backup:  lifeboat is {secs[('first', 'restic')] / lb1:.2f}x restic, "
        f"{secs[('first', 'tar|zstd -3')] / lb1:.2f}x tar|zstd"
    )
    print(f"second backup: lifeboat is {secs[('second', 'restic')] / lb2:.2f}x restic")


if __name__ == "__main__":
    main()
