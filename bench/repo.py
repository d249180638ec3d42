"""Benchmark: lifeboat vs restic (vs `tar | zstd -3`) on a mixed 2 GB tree: first backup,
a second backup after a fresh 2% change, then a restore of that second snapshot from a
cold page cache (also timed with the ``sync`` after it: the ``durable`` row); each run
into fresh repositories.

    .venv/bin/python bench/repo.py [--size-gb 2] [--runs 3] [--s3] [--workdir DIR]

With ``--s3`` both repositories live on a SeaweedFS S3 endpoint (bench/seaweed.py, a fresh
server per run): lifeboat's ``s3://`` repository and ``restic -r s3:http://...``; the
table then also shows the server's CPU and the S3 requests it answered. Without it, both
are local directories.

Not a test: run by hand on the 2-core machine; prints medians over ``--runs`` with their
range, throughput ratios, stored bytes, peak RSS. Data has realistic entropy (text-like
compressible files, random media-like small files) so compression does not flatter anyone.

The tree is generated once per size and kept; every run starts from that same tree (the
previous run's change is undone from an undo log) and applies a new 2% change seeded by
the run number, so a second backup always has ~2% to store, however often this is re-run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Results,
    Run,
    Server,
    apt_install,
    drop_caches,
    du,
    machine,
    media_block,
    spread,
    text_block,
    timed,
)
from seaweed import ADMIN, MeteredSeaweed

ROOT = Path(__file__).resolve().parent.parent
LIFEBOAT = str(ROOT / ".venv" / "bin" / "lifeboat")
FLOOR = [sys.executable, str(Path(__file__).resolve().parent / "s3_floor.py")]
BIG_SHARE = 0.05  # files above this share of the tree get in-place page updates, others are replaced
PAGE = 64 << 10


def make_data(src: Path, size: int) -> None:
    marker = src / ".complete"
    if marker.exists() and json.loads(marker.read_text()).get("size") == size:
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
    marker.write_text(json.dumps({"size": size, "files": n}))


@dataclass
class Change:
    """What a 2% change wrote: bytes in all, and how many of them were incompressible."""

    written: int = 0
    incompressible: int = 0
    regions: list[tuple[str, int, int]] = field(default_factory=list)  # path, offset, length
    files: list[str] = field(default_factory=list)


def plan_change(src: Path, size: int, seed: int) -> Change:
    """Where a change goes (1% of the big files in 64 KB pages, small files replaced up to
    2% of the tree in all), decided before anything is written so it can be undone."""
    rng = random.Random(seed)
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.name != ".complete")
    big = [p for p in files if p.stat().st_size > size * BIG_SHARE]
    change = Change()
    budget = size * 0.02
    for path in big:
        fsize = path.stat().st_size
        for _ in range(int(fsize * 0.01 / PAGE)):
            change.regions.append((str(path), rng.randrange(0, fsize - PAGE), PAGE))
        budget -= fsize * 0.01
    small = [p for p in files if p not in big]
    rng.shuffle(small)
    for path in small:
        if budget <= 0:
            break
        change.files.append(str(path))
        budget -= path.stat().st_size
    return change


def apply_change(work: Path, src: Path, size: int, seed: int) -> Change:
    """A fresh 2% change (new content from ``seed``); the original bytes are saved first
    (undo log), so the next run can start from the generated tree again."""
    undo_change(work)  # the undo log holds one change: the tree must be the generated one
    change = plan_change(src, size, seed)
    undo = work / "undo"
    shutil.rmtree(undo, ignore_errors=True)
    undo.mkdir()
    for n, (path, offset, length) in enumerate(change.regions):
        with open(path, "rb") as fh:
            fh.seek(offset)
            (undo / str(n)).write_bytes(fh.read(length))
    for path in change.files:
        shutil.copyfile(path, undo / Path(path).name)
    log = {"regions": change.regions, "files": change.files}
    (undo / "log.tmp").write_text(json.dumps(log))
    (undo / "log.tmp").rename(undo / "log.json")  # from here on the tree may differ from the original
    rng = random.Random(seed)
    for path, offset, length in change.regions:
        with open(path, "r+b") as fh:
            fh.seek(offset)
            fh.write(text_block(rng, length))
        change.written += length
    for path in change.files:
        data = media_block(rng, Path(path).stat().st_size)
        Path(path).write_bytes(data)
        change.written += len(data)
        change.incompressible += len(data)
    return change


def undo_change(work: Path) -> None:
    """Put back what the last change overwrote (idempotent: an interrupted undo or change
    is finished by running it again)."""
    undo = work / "undo"
    if not (undo / "log.json").exists():
        shutil.rmtree(undo, ignore_errors=True)
        return
    log = json.loads((undo / "log.json").read_text())
    # reversed: overlapping pages end with the oldest bytes
    for n, (path, offset, _) in reversed(list(enumerate(log["regions"]))):
        with open(path, "r+b") as fh:
            fh.seek(offset)
            fh.write((undo / str(n)).read_bytes())
    for path in log["files"]:
        shutil.copyfile(undo / Path(path).name, path)
    shutil.rmtree(undo)


@dataclass
class Backend:
    """Where one run's repositories live: lifeboat's [repository] lines, restic's
    repository, how many bytes each holds, and the S3 server (if any)."""

    lifeboat_repo: str
    restic_repo: str
    lifeboat_stored: Callable[[], int]
    restic_stored: Callable[[], int]
    server: Server | None = None
    env: dict[str, str] = field(default_factory=dict)
    endpoint: str | None = None


@contextmanager
def local_backend(work: Path) -> Iterator[Backend]:
    for d in ("lifeboat-repo", "restic-repo"):
        shutil.rmtree(work / d, ignore_errors=True)
    yield Backend(
        f'url = "file://{work / "lifeboat-repo"}"',
        str(work / "restic-repo"),
        lambda: du(work / "lifeboat-repo"),
        lambda: du(work / "restic-repo"),
    )


def bucket_bytes(s3: object, bucket: str) -> int:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)  # type: ignore[attr-defined]
    return sum(o["Size"] for page in pages for o in page.get("Contents", []))


@contextmanager
def s3_backend(work: Path) -> Iterator[Backend]:
    """A fresh SeaweedFS with one bucket per tool; stopped and its data removed after."""
    import boto3

    shutil.rmtree(work / "seaweed", ignore_errors=True)
    creds = {
        "AWS_ACCESS_KEY_ID": ADMIN.access_key,
        "AWS_SECRET_ACCESS_KEY": ADMIN.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with MeteredSeaweed(work / "seaweed") as server:
        s3 = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=ADMIN.access_key,
            aws_secret_access_key=ADMIN.secret_key,
            region_name="us-east-1",
        )
        for bucket in ("lifeboat", "restic"):
            s3.create_bucket(Bucket=bucket)
        yield Backend(
            f'url = "s3://lifeboat/repo"\nendpoint_url = "{server.endpoint}"\nallow_insecure_http = true',
            f"s3:{server.endpoint}/restic",
            lambda: bucket_bytes(s3, "lifeboat"),
            lambda: bucket_bytes(s3, "restic"),
            server,
            creds,
            server.endpoint,
        )
    shutil.rmtree(work / "seaweed", ignore_errors=True)


def write_policy(work: Path, src: Path, repository: str) -> Path:
    policy = work / "lifeboat.toml"
    policy.write_text(f"""
[repository]
{repository}
keyfile = "backup.key"
recovery_key = "recovery.key"

[deployment]
mode = "development"

[classes.standard]
rpo = "1d"
rto = "4h"

[assets.tree]
kind = "files"
class = "standard"
paths = ["{src}"]
""")
    return policy


def check_second(tool: str, stored: int, change: Change, size: int) -> None:
    """A second backup stores about what changed: never less than the new incompressible
    bytes (a smaller figure means it saw no change), never most of the tree."""
    if stored < 0.5 * change.incompressible:
        raise SystemExit(
            f"{tool}'s second backup stored {stored / 1e6:.1f} MB, but {change.incompressible / 1e6:.1f} MB"
            " of new incompressible data changed: it did not see the change"
        )
    if stored > 0.5 * size:
        raise SystemExit(f"{tool}'s second backup stored {stored / 1e6:.1f} MB: most of the tree again")


def restore_then_sync(
    name: str, cmd: list[str], env: dict[str, str], server: Server | None
) -> tuple[Run, Run]:
    """The restore's run, and the same with the ``sync`` after it: restored *and* on disk.
    lifeboat writes large files back to disk as each completes (fdatasync), restic leaves
    them all in the page cache; a restore an outage waits for is done when its bytes are
    durable, so the ``durable`` row compares the two on that. The page cache is written
    back and dropped first (where allowed): neither pays for the other's writeback, and
    both read their repository cold, as a restore after an outage does (lifeboat drops
    its packs from the cache as it writes them, restic does not)."""
    drop_caches()
    restored = timed(name, cmd, env=env, server=server)
    flushed = timed(f"{name}, sync", ["sync"])
    durable = dataclasses.replace(
        restored,
        seconds=restored.seconds + flushed.seconds,
        cpu_seconds=restored.cpu_seconds + flushed.cpu_seconds,
        system_seconds=restored.system_seconds + flushed.system_seconds,
    )
    return restored, durable


def one_run(k: int, args: argparse.Namespace, work: Path, src: Path, size: int, results: Results) -> Change:
    restic = apt_install("restic", "restic")
    zstd = apt_install("zstd", "zstd")
    backend_cm = s3_backend(work) if args.s3 else local_backend(work)
    with backend_cm as be:
        restored_to = (args.restore_dir or work).resolve()
        for d in (
            work / ".lifeboat",
            work / "restic-cache",
            restored_to / "lb-restore",
            restored_to / "restic-restore",
        ):
            shutil.rmtree(d, ignore_errors=True)
        for f in ("backup.key", "recovery.key", "tree.tar.zst"):
            (work / f).unlink(missing_ok=True)
        policy = write_policy(work, src, be.lifeboat_repo)
        lb = [LIFEBOAT, "-c", str(policy)]
        base_env: dict[str, str] = {}
        if args.lifeboat_src:  # another checkout's sources (a "before" run of a change)
            lb = [str(ROOT / ".venv" / "bin" / "python"), "-m", "lifeboat", "-c", str(policy)]
            base_env = {"PYTHONPATH": str(args.lifeboat_src.resolve())}
        env = {
            "RESTIC_PASSWORD": "bench",
            "RESTIC_REPOSITORY": be.restic_repo,
            "RESTIC_CACHE_DIR": str(work / "restic-cache"),
            **be.env,
            **base_env,
        }
        timed("lifeboat init", [*lb, "init"], env={**be.env, **base_env})
        timed("restic init", [restic, "init"], env=env)
        os.sync()
        server = be.server
        results.add("first", "lifeboat", timed("lb backup", [*lb, "backup", "tree"], env=env, server=server))
        results.add(
            "first",
            "restic",
            timed("restic backup", [restic, "backup", "-q", str(src)], env=env, server=server),
        )
        first_lb, first_restic = be.lifeboat_stored(), be.restic_stored()
        results.cells[("first", "lifeboat")].stored.append(first_lb)
        results.cells[("first", "restic")].stored.append(first_restic)
        if not args.s3:
            tar = f"tar -C {src} -cf - . | {zstd} -3 -T0 -q -o {work / 'tree.tar.zst'}"
            tarred = timed("tar", tar, shell=True)
            results.add("first", "tar|zstd -3", tarred, (work / "tree.tar.zst").stat().st_size)
            (work / "tree.tar.zst").unlink()
        change = apply_change(work, src, size, seed=1000 + k)
        os.sync()
        second = timed("lb backup 2", [*lb, "backup", "tree"], env=env, server=server)
        results.add("second", "lifeboat", second, be.lifeboat_stored() - first_lb)
        second = timed("restic backup 2", [restic, "backup", "-q", str(src)], env=env, server=server)
        results.add("second", "restic", second, be.restic_stored() - first_restic)
        for tool in ("lifeboat", "restic"):
            check_second(tool, results.cells[("second", tool)].stored[-1], change, size)
        # the restores last, of the second snapshots: each drops the page cache first, which
        # the second backups (a tree read moments before, as an hourly backup finds it) must
        # not pay for
        restore_lb = [*lb, "restore", "tree", "--target", str(restored_to / "lb-restore")]
        restore_restic = [restic, "restore", "latest", "-q", "--target", str(restored_to / "restic-restore")]
        for tool, restore in (("lifeboat", restore_lb), ("restic", restore_restic)):
            restored, durable = restore_then_sync(f"{tool} restore", restore, env, server)
            results.add("restore", tool, restored)
            results.add("durable", tool, durable)
        if be.endpoint:
            # what the endpoint allows: every object of lifeboat's repository fetched cold by
            # the thinnest client and thrown away; no restore from this server can beat it
            drop_caches()
            floor = [*FLOOR, "get", be.endpoint, "lifeboat"]
            results.add("restore", "floor", timed("floor: GET all", floor, env=env, server=server))
        for d in (restored_to / "lb-restore", restored_to / "restic-restore"):
            if du(d) != du(src):
                raise SystemExit(f"{d}: restored {du(d)} bytes of {du(src)}")
            shutil.rmtree(d)
    return change


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3, help="runs per row; medians and ranges printed")
    parser.add_argument("--s3", action="store_true", help="both repositories on a SeaweedFS endpoint")
    parser.add_argument("--workdir", type=Path, help="default bench/out/repo (repo-s3 with --s3)")
    parser.add_argument(
        "--restore-dir",
        type=Path,
        help="where restores go (default: the work dir); /dev/shm/X takes the disk out of the restore rows",
    )
    parser.add_argument(
        "--lifeboat-src",
        type=Path,
        help="run lifeboat from these sources (e.g. `git archive REV src | tar -x -C DIR`, then DIR/src)",
    )
    args = parser.parse_args()
    size = int(args.size_gb * (1 << 30))
    work = (args.workdir or ROOT / "bench" / "out" / ("repo-s3" if args.s3 else "repo")).resolve()
    src = work / "src"
    work.mkdir(parents=True, exist_ok=True)
    undo_change(work)  # a previous invocation's last change
    print(f"generating {args.size_gb} GB of mixed data in {src} ...", flush=True)
    make_data(src, size)
    results = Results()
    changes = []
    for k in range(1, args.runs + 1):
        print(f"run {k} of {args.runs}", flush=True)
        changes.append(one_run(k, args, work, src, size, results))
        undo_change(work)
    where = "a SeaweedFS S3 endpoint (fresh per run)" if args.s3 else "local directories"
    changed = statistics.median(c.written for c in changes)
    print(
        f"\n{size / 1e9:.2f} GB tree, repositories on {where}; median (min-max) of {args.runs} run(s);"
        f" second backup after {changed / 1e6:.0f} MB ({changed / size:.1%}) changed, new each run;"
        f" restores into {(args.restore_dir or work).resolve()}; {machine()} at the end"
    )
    results.print_table(lambda phase: size)
    for phase in ("first", "restore", "durable", "second"):
        speed = spread(results.speed_ratio(phase, "lifeboat", "restic"), ".2f")
        cpu = spread(results.cpu_ratio(phase, "lifeboat", "restic"), ".2f")
        line = f"{phase}: lifeboat is {speed}x restic (by CPU, server's included: {cpu}x)"
        if results.has(phase, "tar|zstd -3"):
            line += f", {spread(results.speed_ratio(phase, 'lifeboat', 'tar|zstd -3'), '.2f')}x tar|zstd"
        print(line)
        if results.has(phase, "floor"):
            of_floor = {
                t: spread([100 * r for r in results.speed_ratio(phase, t, "floor")], ".0f")
                for t in ("lifeboat", "restic")
            }
            best = spread(results.speed_ratio(phase, "floor", "restic"), ".2f")
            print(
                f"  the endpoint floor (GET every object of lifeboat's repository, bytes discarded):"
                f" lifeboat at {of_floor['lifeboat']}% of its speed, restic at {of_floor['restic']}%;"
                f" at the floor's speed lifeboat would be {best}x restic"
            )
    if args.s3:  # issue #18's targets for a repository on S3
        goals = [("first", 1.5), ("restore", 2.0), ("durable", 2.0), ("second", 2.0)]
        results.targets(
            [
                (f"{phase}: lifeboat x restic", results.speed_ratio(phase, "lifeboat", "restic"), m)
                for phase, m in goals
            ]
        )
    for tool in ("lifeboat", "restic"):
        stored = results.cells[("second", tool)].stored
        ratios = [s / c.written for s, c in zip(stored, changes, strict=True)]
        print(f"second backup stored by {tool}: {spread(ratios, '.2f')}x the bytes changed")


if __name__ == "__main__":
    main()
