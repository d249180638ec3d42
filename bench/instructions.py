"""Benchmark: instructions, not seconds. A command's instruction count under valgrind
(cachegrind, no cache simulation) is the same from one run to the next to ~0.05%, where the
wall time of the same command on the 2-core VM these sessions run on moved by 30-50% from
one hour to the next: it tells whether a change to lifeboat's own code made it do less.

    .venv/bin/python bench/instructions.py [--files 3000] [--workdir bench/out/instructions]
                                           [--against DIR]

Each phase on the small-files tree of bench/small_files.py (0.5-4 KB, half random): start-up
alone (`backup` of an asset the policy lacks, after the policy is read), the first backup of
the `keys` asset, then the unchanged backup of the `dir://` objects asset. ``--against DIR``
runs each phase with ``PYTHONPATH=DIR`` too (another checkout's `src`, e.g. a `git worktree`
of the commit before; run its `python -m lifeboat.cli.method_cache` first so that both start
alike) and prints the difference. Millions of instructions (Ir), user space only, every
thread of the command. Not a test; needs valgrind (installed with apt when missing).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import apt_install
from small_files import make_tree, write_policy

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
LIFEBOAT = str(ROOT / ".venv" / "bin" / "lifeboat")
PHASES = {  # phase -> (backups run first, uncounted; the backup counted)
    "start-up": ([], "no-such-asset"),
    "first keys backup": ([], "material"),
    "unchanged dir:// backup": (["media"], "media"),
}


def fresh_repository(work: Path, policy: Path, python_path: str | None) -> None:
    """An initialised repository, the same one before every phase (copied from the first)."""
    pristine = work / "pristine"
    if not pristine.exists():
        for name in ("lifeboat-repo", ".lifeboat", "shares"):
            shutil.rmtree(work / name, ignore_errors=True)
        for name in ("backup.key", "recovery.key"):
            (work / name).unlink(missing_ok=True)
        run([LIFEBOAT, "-c", str(policy), "init", "--shares-out", str(work / "shares")], python_path)
        pristine.mkdir()
        for name in ("lifeboat-repo", ".lifeboat"):
            shutil.copytree(work / name, pristine / name, symlinks=True)
    for name in ("lifeboat-repo", ".lifeboat"):
        shutil.rmtree(work / name, ignore_errors=True)
        shutil.copytree(pristine / name, work / name, symlinks=True)


def run(cmd: list[str], python_path: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"PYTHONPATH": python_path} if python_path else {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


def instructions(work: Path, policy: Path, phase: str, python_path: str | None) -> float:
    """Millions of instructions of the phase's counted command."""
    before, counted = PHASES[phase]
    fresh_repository(work, policy, python_path)
    for asset in before:
        run([LIFEBOAT, "-c", str(policy), "backup", asset], python_path)
    valgrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    done = run([*valgrind, PYTHON, LIFEBOAT, "-c", str(policy), "backup", counted], python_path)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise SystemExit(f"valgrind gave no count for {phase}: {done.stderr[-500:]}")
    return int(found.group(1).replace(",", "")) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "instructions")
    parser.add_argument("--against", help="another checkout's src directory to compare with")
    args = parser.parse_args()
    apt_install("valgrind", "valgrind")
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    make_tree(work / "src", args.files)
    policy = write_policy(work, work / "src")
    print(f"{args.files} small files; millions of instructions (valgrind cachegrind, user space)")
    against = f" {'--against':>10} {'change':>8}" if args.against else ""
    print(f"{'phase':26} {'this checkout':>14}{against}")
    for phase in PHASES:
        ours = instructions(work, policy, phase, None)
        line = f"{phase:26} {ours:14,.0f}"
        if args.against:
            theirs = instructions(work, policy, phase, args.against)
            line += f" {theirs:10,.0f} {100 * (ours - theirs) / theirs:+7.1f}%"
        print(line, flush=True)


if __name__ == "__main__":
    main()
