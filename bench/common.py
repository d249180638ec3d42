"""Shared benchmark helpers: timed subprocesses with peak RSS, data generators, tables."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

WORDS = ["".join(random.Random(i).choices("abcdefghijklmnopqrstuvwxyz", k=3 + i % 9)) for i in range(8192)]


@dataclass
class Run:
    name: str
    seconds: float
    peak_rss_mb: float
    returncode: int
    output: str


# A forked child starts with its parent's RSS high-water mark, and exec keeps it: a
# command started straight from this (large) benchmark process reports at least the
# benchmark's own RSS. A small launcher spawns it instead, and reports its wall time and
# peak RSS from wait4.
LAUNCHER = """
import os, sys, time
started = time.monotonic()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.monotonic() - started
with open(sys.argv[1], "w") as out:
    out.write(f"{seconds} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def timed(
    name: str,
    cmd: list[str] | str,
    *,
    env: dict[str, str] | None = None,
    shell: bool = False,
    cwd: Path | None = None,
) -> Run:
    """Run a command; its wall time and peak RSS."""
    argv = ["/bin/sh", "-c", cmd] if shell else cmd
    assert isinstance(argv, list)
    with tempfile.NamedTemporaryFile("r", prefix="bench-timed-") as report:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, report.name, *argv],
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output = proc.stdout.decode(errors="replace")
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed ({proc.returncode}):\n{output[-3000:]}")
        seconds, maxrss_kb = report.read().split()
    return Run(name, float(seconds), int(maxrss_kb) / 1024, proc.returncode, output)


def text_block(rng: random.Random, size: int) -> bytes:
    """Log/text-like bytes that zstd compresses about 3x, like real application data."""
    parts: list[bytes] = []
    total = 0
    while total < size:
        line = (
            f"{rng.getrandbits(40):010x} user={rng.randrange(10**6)} "
            + " ".join(rng.choices(WORDS, k=12))
            + f" latency_ms={rng.random() * 100:.3f}\n"
        ).encode()
        parts.append(line)
        total += len(line)
    return b"".join(parts)[:size]


def media_block(rng: random.Random, size: int) -> bytes:
    """Already-compressed media: incompressible bytes."""
    return rng.randbytes(size)


def apt_install(package: str, binary: str) -> str:
    path = shutil.which(binary)
    if path:
        return path
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", package],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    path = shutil.which(binary)
    if not path:
        raise SystemExit(f"{binary} not available after installing {package}")
    return path


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
