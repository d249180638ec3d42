"""Shared benchmark helpers: timed subprocesses with peak RSS, data generators, tables."""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

WORDS = ["".join(random.Random(i).choices("abcdefghijklmnopqrstuvwxyz", k=3 + i % 9)) for i in range(8192)]


@dataclass
class Run:
    name: str
    seconds: float
    peak_rss_mb: float
    returncode: int
    output: str
    cpu_seconds: float = 0.0  # the command's own user + system CPU (its reaped children too)
    # of it in the kernel: on the VM these figures come from, filling memory freed a while ago
    # cost several times what refilling fresh pages did, and it showed only here
    system_seconds: float = 0.0
    server_cpu: float = 0.0  # the S3 server's CPU over the same interval (0 without a server)
    requests: dict[str, int] = field(default_factory=dict)  # S3 requests it answered meanwhile, by type


class Server(Protocol):
    """An S3 server whose CPU and request counters can be read (bench/seaweed.py)."""

    def cpu_seconds(self) -> float: ...

    def requests(self) -> dict[str, int]: ...


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
    out.write(f"{seconds} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime} {usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def timed(
    name: str,
    cmd: list[str] | str,
    *,
    env: dict[str, str] | None = None,
    shell: bool = False,
    cwd: Path | None = None,
    server: Server | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> Run:
    """Run a command; its wall time, peak RSS and CPU, and (given the S3 ``server``) the
    CPU it spent and the requests it answered meanwhile. An exit code outside ``ok_codes``
    stops the benchmark."""
    argv = ["/bin/sh", "-c", cmd] if shell else cmd
    assert isinstance(argv, list)
    cpu_before = server.cpu_seconds() if server else 0.0
    requests_before = server.requests() if server else {}
    with tempfile.NamedTemporaryFile("r", prefix="bench-timed-") as report:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, report.name, *argv],
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output = proc.stdout.decode(errors="replace")
        if proc.returncode not in ok_codes:
            raise SystemExit(f"{name} failed ({proc.returncode}):\n{output[-3000:]}")
        seconds, maxrss_kb, cpu, system = report.read().split()
    run = Run(name, float(seconds), int(maxrss_kb) / 1024, proc.returncode, output, float(cpu), float(system))
    if server:
        run.server_cpu = server.cpu_seconds() - cpu_before
        after = server.requests()
        run.requests = {
            k: n - requests_before.get(k, 0) for k, n in after.items() if n > requests_before.get(k, 0)
        }
    return run


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


# What the first bytes of real media files look like: a JPEG's SOI + JFIF APP0 segment, an
# MP4's ftyp box. The rest of such a file is entropy-coded, so random bytes stand in for it.
JPEG_HEAD = bytes.fromhex("ffd8ffe000104a46494600010101004800480000")
MP4_HEAD = b"\x00\x00\x00\x1cftypisom\x00\x00\x02\x00isomiso2mp41"


def media_file(rng: random.Random, size: int, kind: str) -> bytes:
    """A real-looking media file body (``jpg`` or ``mp4``) of ``size`` bytes."""
    head, tail = (JPEG_HEAD, b"\xff\xd9") if kind == "jpg" else (MP4_HEAD, b"")
    if size <= len(head) + len(tail):
        return rng.randbytes(size)
    return head + rng.randbytes(size - len(head) - len(tail)) + tail


def apt_install(package: str, binary: str) -> str:
    path = shutil.which(binary)
    if path:
        return path
    print(f"installing {package} with apt ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
    # dpkg's progress lines would bury the figures in `make bench`'s logs: shown on failure only
    proc = subprocess.run(
        ["apt-get", "install", "-y", "-qq", package],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"apt-get install {package} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
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


def machine() -> str:
    """The cores and how busy they were (1-minute load average): figures from a shared,
    loaded machine say so."""
    return f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"


def requests_text(requests: dict[str, int]) -> str:
    """``GET 510 PUT 3``: S3 requests by type (SeaweedFS counts HEAD as GET)."""
    return " ".join(f"{kind} {n}" for kind, n in sorted(requests.items())) or "none"


def spread(values: Sequence[float], fmt: str = ".1f") -> str:
    """The median, and with more than one run its range: ``12.3 (11.9-13.0)``."""
    med = statistics.median(values)
    if len(values) < 2:
        return f"{med:{fmt}}"
    return f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


@dataclass
class Cell:
    """Every run of one (phase, tool) row, and what each stored (bytes; None when the row
    stores nothing)."""

    runs: list[Run] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)


class Results:
    """Rows measured over several runs, tools side by side within each run, printed as
    medians with their spread."""

    def __init__(self) -> None:
        self.cells: dict[tuple[str, str], Cell] = {}

    def add(self, phase: str, tool: str, run: Run, stored: int | None = None) -> Run:
        cell = self.cells.setdefault((phase, tool), Cell())
        cell.runs.append(run)
        if stored is not None:
            cell.stored.append(stored)
        print(
            f"  {phase:<8} {tool:<14} {run.seconds:7.1f} s  {run.peak_rss_mb:5.0f} MB RSS"
            + (f"  server CPU {run.server_cpu:.1f} s, {requests_text(run.requests)}" if run.requests else "")
            + (f"  stored {stored / 1e6:.1f} MB" if stored is not None else ""),
            flush=True,
        )
        return run

    def seconds(self, phase: str, tool: str) -> list[float]:
        return [r.seconds for r in self.cells[(phase, tool)].runs]

    def speed_ratio(self, phase: str, tool: str, other: str) -> list[float]:
        """Per run: how many times faster ``tool`` was than ``other`` (other's time / tool's)."""
        return [o / t for t, o in zip(self.seconds(phase, tool), self.seconds(phase, other), strict=True)]

    def cpu_ratio(self, phase: str, tool: str, other: str) -> list[float]:
        """Per run: other's CPU / tool's, the S3 server's included. On a loaded machine the
        wall-time ratio follows whoever got the cores; this one does not."""
        cpu = {t: [r.cpu_seconds + r.server_cpu for r in self.cells[(phase, t)].runs] for t in (tool, other)}
        return [o / max(t, 0.01) for t, o in zip(cpu[tool], cpu[other], strict=True)]

    def targets(self, goals: list[tuple[str, list[float], float]], rss_limit_mb: float = 200) -> None:
        """Each goal (label, per-run values, minimum) met or missed by its median, and every
        row whose peak RSS went over ``rss_limit_mb``: misses are reported, not hidden."""
        print("targets (median of the runs):")
        for label, values, minimum in goals:
            med = statistics.median(values)
            print(f"  {label}: {med:.2f} (target >= {minimum:g}) {'met' if med >= minimum else 'MISSED'}")
        over = [
            f"{phase} {tool} {max(r.peak_rss_mb for r in cell.runs):.0f} MB"
            for (phase, tool), cell in self.cells.items()
            if tool.startswith("lifeboat") and max(r.peak_rss_mb for r in cell.runs) > rss_limit_mb
        ]
        print(
            f"  lifeboat peak RSS <= {rss_limit_mb:.0f} MB in every row: "
            + (f"MISSED ({'; '.join(over)})" if over else "met")
        )

    def has(self, phase: str, tool: str) -> bool:
        return (phase, tool) in self.cells

    def print_table(self, volume: Callable[[str], float], count: int | None = None) -> None:
        """One line per row: median (min-max) over the runs. ``volume(phase)`` is the bytes
        a phase moves (for MB/s); ``count`` adds an objects/s column."""
        server = any(r.requests for c in self.cells.values() for r in c.runs)
        headers = ["phase", "tool", "seconds", "MB/s"]
        headers += ["objects/s"] if count else []
        headers += ["stored MB", "peak RSS MB", "CPU s", "of it sys s"]
        headers += ["server CPU s", "S3 requests"] if server else []
        rows = []
        for (phase, tool), cell in self.cells.items():
            secs = [r.seconds for r in cell.runs]
            row = [phase, tool, spread(secs), spread([volume(phase) / s / 1e6 for s in secs], ".0f")]
            row += [spread([count / s for s in secs], ".0f")] if count else []
            row += [
                spread([b / 1e6 for b in cell.stored], ".0f") if cell.stored else "-",
                spread([r.peak_rss_mb for r in cell.runs], ".0f"),
                spread([r.cpu_seconds for r in cell.runs]),
                spread([r.system_seconds for r in cell.runs]),
            ]
            if server and any(r.requests for r in cell.runs):
                kinds = sorted({k for r in cell.runs for k in r.requests})
                medians = {
                    k: round(statistics.median(r.requests.get(k, 0) for r in cell.runs)) for k in kinds
                }
                row += [spread([r.server_cpu for r in cell.runs]), requests_text(medians)]
            elif server:
                row += ["-", "-"]
            rows.append(row)
        print_table(headers, rows)


def drop_caches() -> bool:
    """Drop the page cache (clean pages only: sync first); False where not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True
