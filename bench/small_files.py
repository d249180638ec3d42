"""Benchmark: many small files (0.5-4 KB, half random) — lifeboat vs restic.

    .venv/bin/python bench/small_files.py [--files 100000] [--runs 3] [--restore-dir DIR]
        [--workdir bench/out/small] [--no-objects] [--no-files] [--keys]

Phases for each tool, back to back on the same tree: first backup, unchanged second
backup, full restore (restic's phases run after lifeboat's in odd runs, before them in
even ones). lifeboat runs the tree as a `files` asset and, unless
``--no-objects``, as an `objects` asset with a ``dir://`` source (restored to a
``dir://`` target), and with ``--keys`` as a `keys` asset (every file fingerprinted,
restored with two of three custodians' shares; restic's restore then runs a second time
with ``--verify``, which reads every restored file back as a keys restore does). Each run
starts from fresh repositories; the table shows the median of ``--runs`` runs with their
range, the ratio restic/lifeboat per run (target >= 1.5) and peak RSS (wait4 of the
command, see common.timed; target <= 200 MB).

The page cache is dropped before every phase when this process may (root, a writable
/proc/sys/vm/drop_caches); the output says which. ``--restore-dir`` puts the restored
trees elsewhere: on the 2-core VM this was written on, creating 30,000 files on its disk
took from 3.6 s to 21 s from one run to the next (a Python loop, no backup tool), which
swamps both tools' own time; a tmpfs (/dev/shm) measures the tools. Not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Results, Run, apt_install, drop_caches, media_block, spread, text_block, timed

ROOT = Path(__file__).resolve().parent.parent
TOOLS = {"tree": "lifeboat files", "media": "lifeboat dir://", "material": "lifeboat keys"}
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

[assets.media]
kind = "objects"
class = "standard"
source = "dir://{src}"

[assets.material]
kind = "keys"
class = "standard"
paths = ["{src}"]

[escrow]
threshold = 2
custodians = ["alice", "bob", "carol"]
""")
    return policy


def reset(work: Path) -> None:
    for d in ("lifeboat-repo", "restic-repo", "restic-cache", ".lifeboat", "shares"):
        shutil.rmtree(work / d, ignore_errors=True)
    for d in ("restore-lb", "restore-restic"):
        shutil.rmtree(work / d, ignore_errors=True)
    for f in ("backup.key", "recovery.key"):
        (work / f).unlink(missing_ok=True)


def cold(name: str, cmd: list[str], env: dict[str, str] | None = None) -> Run:
    """``timed`` after dropping the page cache (if allowed)."""
    drop_caches()
    return timed(name, cmd, env=env)


def run_lifeboat(work: Path, policy: Path, asset: str, restored: Path, results: Results) -> None:
    """The three phases of one asset on a new repository."""
    for d in ("lifeboat-repo", ".lifeboat", "shares"):
        shutil.rmtree(work / d, ignore_errors=True)
    for f in ("backup.key", "recovery.key"):
        (work / f).unlink(missing_ok=True)
    shutil.rmtree(restored, ignore_errors=True)
    lb = [LIFEBOAT, "-c", str(policy)]
    tool = TOOLS[asset]
    timed("lifeboat init", [*lb, "init", "--shares-out", str(work / "shares")])
    results.add("first", tool, cold("lifeboat backup", [*lb, "backup", asset]))
    results.add("unchanged", tool, cold("lifeboat backup 2", [*lb, "backup", asset]))
    target = f"dir://{restored}" if asset == "media" else str(restored)
    shares = [a for c in ("alice", "bob") for a in ("--share", str(work / "shares" / f"{c}.share"))]
    restore = [*lb, "restore", asset, "--target", target, *(shares if asset == "material" else [])]
    results.add("restore", tool, cold("lifeboat restore", restore))
    shutil.rmtree(restored, ignore_errors=True)


def run_restic(work: Path, src: Path, restored: Path, results: Results, *, verify: bool = False) -> None:
    """restic's three phases; with ``verify`` its restore once more with ``--verify``, which
    reads every restored file back as a keys restore does (to compare like with like)."""
    restic = apt_install("restic", "restic")
    env = {
        "RESTIC_PASSWORD": os.environ.get("RESTIC_PASSWORD", "bench"),
        "RESTIC_REPOSITORY": str(work / "restic-repo"),
        "RESTIC_CACHE_DIR": str(work / "restic-cache"),
    }
    for d in ("restic-repo", "restic-cache"):
        shutil.rmtree(work / d, ignore_errors=True)
    shutil.rmtree(restored, ignore_errors=True)
    timed("restic init", [restic, "init"], env=env)
    results.add("first", "restic", cold("restic backup", [restic, "backup", "-q", str(src)], env=env))
    results.add("unchanged", "restic", cold("restic backup 2", [restic, "backup", "-q", str(src)], env=env))
    restore = [restic, "restore", "latest", "-q", "--target", str(restored)]
    results.add("restore", "restic", cold("restic restore", restore, env=env))
    shutil.rmtree(restored, ignore_errors=True)
    if verify:
        verified = cold("restic restore --verify", [*restore, "--verify"], env=env)
        results.add("restore", "restic --verify", verified)
        shutil.rmtree(restored, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "small")
    parser.add_argument("--restore-dir", type=Path, help="where restores go (default: the work dir)")
    parser.add_argument("--no-objects", action="store_true", help="skip the dir:// objects rows")
    parser.add_argument("--no-files", action="store_true", help="skip the files asset rows")
    parser.add_argument("--keys", action="store_true", help="add the keys asset rows")
    parser.add_argument("--lifeboat-only", action="store_true", help="skip restic (for profiling rounds)")
    args = parser.parse_args()
    work = args.workdir.resolve()
    src = work / "src"
    print(f"generating {args.files} small files in {src} ...", flush=True)
    make_tree(src, args.files)
    reset(work)
    policy = write_policy(work, src)
    restore_base = (args.restore_dir or work).resolve()
    restore_base.mkdir(parents=True, exist_ok=True)
    print(
        f"{args.files} files, {args.runs} run(s), load average {os.getloadavg()[0]:.1f} at start "
        f"({os.cpu_count()} cores); page cache "
        + ("dropped before every phase" if drop_caches() else "NOT dropped (not allowed): warm tree")
        + f"; restores into {restore_base}",
        flush=True,
    )
    results = Results()
    for k in range(args.runs):
        print(f"run {k + 1}/{args.runs}", flush=True)
        # restic first every other run: on this VM a tool's disk times drift with what ran
        # before it (the page cache's pages, the disk's writeback), and a fixed order gave
        # one tool the same side of that drift in every run
        restic_first = k % 2 == 1 and not args.lifeboat_only
        if restic_first:
            run_restic(work, src, restore_base / "restore-restic", results, verify=args.keys)
        if not args.no_files:
            run_lifeboat(work, policy, "tree", restore_base / "restore-lb", results)
        if not args.no_objects:
            run_lifeboat(work, policy, "media", restore_base / "restore-lb-dir", results)
        if args.keys:
            run_lifeboat(work, policy, "material", restore_base / "restore-lb-keys", results)
        if not args.lifeboat_only and not restic_first:
            run_restic(work, src, restore_base / "restore-restic", results, verify=args.keys)
    volume = float(sum(p.stat().st_size for p in src.rglob("*.dat")))
    results.print_table(lambda _: volume, count=args.files)
    if args.lifeboat_only:
        return
    tools = ([] if args.no_files else ["lifeboat files"]) + ([] if args.no_objects else ["lifeboat dir://"])
    tools += ["lifeboat keys"] if args.keys else []
    print("restic's time / lifeboat's, per run:")
    for tool in tools:
        for phase in ("first", "unchanged", "restore"):
            print(f"  {phase:<9} {tool:<15} {spread(results.speed_ratio(phase, tool, 'restic'), '.2f')}x")
    if args.keys:  # a keys restore reads every file back to fingerprint it: so does --verify
        ratio = spread(results.speed_ratio("restore", "lifeboat keys", "restic --verify"), ".2f")
        print(f"  restore   lifeboat keys   {ratio}x against restic restore --verify (both read back)")
    results.targets(
        [
            (f"{phase} {tool} vs restic", results.speed_ratio(phase, tool, "restic"), 1.5)
            for tool in tools
            for phase in ("first", "unchanged", "restore")
        ]
    )


if __name__ == "__main__":
    main()
