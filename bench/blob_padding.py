"""Cost of blob padding (issue #14): stored bytes and first-backup time of a mixed tree on a
local repository, with whatever lifeboat is importable (run it under two checkouts, e.g.
``PYTHONPATH=/path/to/other/src``, and compare). The tree is bench/repo.py's (70 % large
text-like logs, 30 % small files, a third text-like, the rest media-like).

    .venv/bin/python bench/blob_padding.py [--size-mb 500] [--workdir DIR]

Prints one JSON line: logical and stored bytes (the pack files), the backup's wall-clock
and CPU seconds (CPU time is steadier than wall time on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lifeboat.assets.files.tree import backup_paths
from lifeboat.repo import Repository
from lifeboat.storage import open_storage
from repo import make_data  # bench/repo.py's tree


def packs_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "data").rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lifeboat-bench-padding"))
    args = parser.parse_args()
    src = args.workdir / f"tree-{args.size_mb}mb"
    make_data(src, args.size_mb << 20)
    repo_dir = args.workdir / "repo"
    shutil.rmtree(repo_dir, ignore_errors=True)
    repo, _, _ = Repository.create(open_storage(f"file://{repo_dir}"), cache_dir=args.workdir / "cache")
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    snap = backup_paths(repo, "files", [src])
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime
    print(
        json.dumps(
            {
                "code": str(Path(sys.modules["lifeboat"].__file__ or "").parent),
                "logical": snap.stats.bytes,
                "stored": packs_bytes(repo_dir),
                "seconds": round(seconds, 2),
                "cpu_seconds": round(cpu_seconds, 2),
            }
        )
    )
    shutil.rmtree(repo_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
