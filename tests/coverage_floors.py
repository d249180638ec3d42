"""Fail when a lifeboat package's statement coverage is below its floor.

    python -m tests.coverage_floors [--data FILE] [--write]

Reads the combined coverage data (``COVERAGE_FILE`` or ``--data``), groups the measured
files of ``src/lifeboat`` by package (each asset kind is a package of its own, modules
directly under ``lifeboat/`` are ``top-level``), prints one line per package and exits 1
when any package, or the whole, is below its floor in pyproject.toml
``[tool.lifeboat.coverage_floors]``. ``--write`` sets every floor to what was measured less
``MARGIN``, rounded down (never below ``overall`` for the whole): run it after a full ``make coverage``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
KINDS = ("files", "postgres", "objects", "keys")
TABLE = "[tool.lifeboat.coverage_floors]"


@dataclass
class Tally:
    statements: int = 0
    missing: int = 0

    @property
    def percent(self) -> float:
        return 100.0 if not self.statements else 100.0 * (self.statements - self.missing) / self.statements


def package_of(path: str) -> str | None:
    """``assets/postgres``, ``repo``, ``top-level``... for a file of src/lifeboat; None outside it."""
    parts = Path(path).parts
    if "lifeboat" not in parts:
        return None
    rel = parts[len(parts) - 1 - parts[::-1].index("lifeboat") + 1 :]
    if len(rel) == 1:
        return "top-level"
    if rel[0] == "assets":
        kind = rel[1].removesuffix(".py")
        return f"assets/{kind}" if kind in KINDS else "assets"
    return rel[0]


def measure(data_file: str) -> dict[str, Tally]:
    cov = coverage.Coverage(data_file=data_file, config_file=str(PYPROJECT))
    cov.load()
    tallies: dict[str, Tally] = {}
    for measured in cov.get_data().measured_files():
        package = package_of(measured)
        if package is None or not measured.endswith(".py"):
            continue
        _, statements, _, missing, _ = cov.analysis2(measured)
        tally = tallies.setdefault(package, Tally())
        tally.statements += len(statements)
        tally.missing += len(missing)
    return tallies


def floors() -> dict[str, float]:
    table = tomllib.loads(PYPROJECT.read_text()).get("tool", {}).get("lifeboat", {})
    return {str(k): float(v) for k, v in table.get("coverage_floors", {}).items()}


# Floors sit this far under what a full run measured: runs of the same tree differ by up to
# a point in small packages (which retry path a loaded machine takes, a child process killed
# before it wrote its data), and the gate must catch lost tests, not that noise.
MARGIN = 1.5


def write_floors(tallies: dict[str, Tally], overall: Tally, minimum: float) -> None:
    lines = [TABLE, f"overall = {max(math.floor(overall.percent - MARGIN), int(minimum))}"]
    lines += [f'"{name}" = {math.floor(t.percent - MARGIN)}' for name, t in sorted(tallies.items())]
    text = PYPROJECT.read_text()
    text = re.sub(re.escape(TABLE) + r"\n(?:.+\n?)*", "\n".join(lines) + "\n", text)
    PYPROJECT.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("COVERAGE_FILE", ".coverage"))
    parser.add_argument("--write", action="store_true", help="set the floors to what was measured")
    args = parser.parse_args()
    tallies = measure(args.data)
    if not tallies:
        print(f"no coverage data for lifeboat in {args.data}", file=sys.stderr)
        return 1
    overall = Tally(sum(t.statements for t in tallies.values()), sum(t.missing for t in tallies.values()))
    wanted = floors()
    if args.write:
        write_floors(tallies, overall, wanted.get("overall", 85))
        wanted = floors()
    below = []
    for name, tally in [*sorted(tallies.items()), ("overall", overall)]:
        floor = wanted.get(name)
        verdict = "" if floor is None else ("ok" if tally.percent >= floor else "BELOW")
        print(
            f"{name:18} {tally.percent:5.1f}%  floor {'-' if floor is None else f'{floor:.0f}%':>4}  "
            f"{tally.statements - tally.missing}/{tally.statements}  {verdict}"
        )
        if verdict == "BELOW":
            below.append(name)
    if below:
        print(f"coverage below its floor: {', '.join(below)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
