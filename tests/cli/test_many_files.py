"""Many small files: backups keep memory bounded and restore byte for byte (issue #18)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import write_policy
from tests.harness import LifeboatCli
from tests.objects.dir_media import dir_media

FILES = 20_000
# Peak RSS over 20,000 files of 1-200 bytes, measured on the 2-core machine: before the
# small-files work 152 MB (first backup) and 168 MB (unchanged); after it 109 and 115 MB;
# with the streamed tree 77, 67 and 75 MB (restore); under `make test`'s coverage tracing
# the restore reached 90 MB once. The process alone (imports) is ~55 MB.
RSS_BOUND_MB = 100

# Flat memory: peak RSS at SMALL and LARGE files (contents drawn from DISTINCT) may differ
# by less than GROWTH_MB per 10,000 files. Measured: under 1 MB for the backups and ~3.7 MB
# for the restore (the target's record of what it created, ~150 bytes a file, for taking it
# back on a full disk; and the held tree packs, bounded at 2 x 2 MiB).
SMALL, LARGE, DISTINCT = 10_000, 40_000, 2_000
GROWTH_MB = 5.0

# Spawned from a small interpreter, not forked from pytest: a forked child starts with its
# parent's RSS high-water mark, which would measure pytest, not lifeboat.
LAUNCHER = """
import os, sys
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def make_tree(source: Path, files: int = FILES, distinct: int | None = None) -> dict[str, bytes]:
    """``files`` files of 1-200 bytes in directories of 500; with ``distinct``, their
    contents drawn from that many (so the blob index is the same size whatever ``files``)."""
    rng = random.Random(18)
    pool = [rng.randbytes(rng.randint(1, 200)) for _ in range(distinct)] if distinct else []
    contents = {}
    for i in range(files):
        rel = f"d{i // 500:03d}/f{i:06d}"
        data = pool[i % len(pool)] if pool else rng.randbytes(rng.randint(1, 200))
        path = source / rel
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        contents[rel] = data
    return contents


def peak_rss_mb(tmp_path: Path, env: dict[str, str], lb: LifeboatCli, *args: str) -> float:
    report = tmp_path / "maxrss"
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", LAUNCHER, str(report), *lb.command(*args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return int(report.read_text()) / 1024


def test_many_small_files_back_up_in_bounded_memory_and_restore_exactly(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    contents = make_tree(source)
    policy = write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}")
    env = {**os.environ, "LIFEBOAT_ACTOR": "test"}
    lb = LifeboatCli(policy)
    recovery = str(tmp_path / "recovery.key")
    lb.run("init", "--recovery-key-out", recovery)

    first = peak_rss_mb(tmp_path, env, lb, "backup", "config")
    second = peak_rss_mb(tmp_path, env, lb, "backup", "config")  # every file from the parent
    assert first < RSS_BOUND_MB, f"first backup peaked at {first:.0f} MB"
    assert second < RSS_BOUND_MB, f"unchanged backup peaked at {second:.0f} MB"

    target = tmp_path / "restored"
    restore = peak_rss_mb(
        tmp_path, env, lb, "restore", "config", "--target", str(target), "--recovery-key", recovery
    )
    assert restore < RSS_BOUND_MB, f"restore peaked at {restore:.0f} MB"
    restored = {
        str(p.relative_to(target / "source")): p.read_bytes() for p in target.rglob("*") if p.is_file()
    }
    assert len(restored) == FILES
    assert restored == contents


def phases_peak_rss(tmp_path: Path, files: int) -> list[float]:
    """Peak RSS (MB) of a first backup, an unchanged backup and a restore of ``files`` files."""
    source = tmp_path / "source"
    source.mkdir(parents=True)
    contents = make_tree(source, files, distinct=DISTINCT)
    policy = write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}")
    env = {**os.environ, "LIFEBOAT_ACTOR": "test"}
    lb = LifeboatCli(policy)
    recovery = str(tmp_path / "recovery.key")
    lb.run("init", "--recovery-key-out", recovery)
    first = peak_rss_mb(tmp_path, env, lb, "backup", "config")
    second = peak_rss_mb(tmp_path, env, lb, "backup", "config")
    target = tmp_path / "restored"
    restore = peak_rss_mb(
        tmp_path, env, lb, "restore", "config", "--target", str(target), "--recovery-key", recovery
    )
    restored = sum(1 for p in target.rglob("*") if p.is_file())
    assert restored == len(contents)
    return [first, second, restore]


def test_memory_does_not_grow_with_the_number_of_files(tmp_path):
    """The same backups and restore at SMALL and LARGE files: each phase's peak RSS grows by
    less than GROWTH_MB per 10,000 more files (before the streamed tree it was ~27 MB: an
    entry per file, the parent cache and the whole tree held at once). File contents repeat,
    so the blob index (which grows with the data, not the file count) is the same size."""
    small = phases_peak_rss(tmp_path / "small", SMALL)
    large = phases_peak_rss(tmp_path / "large", LARGE)
    per_10k = [(b - a) * 10_000 / (LARGE - SMALL) for a, b in zip(small, large, strict=True)]
    for phase, growth, a, b in zip(
        ("first backup", "unchanged backup", "restore"), per_10k, small, large, strict=True
    ):
        assert growth < GROWTH_MB, f"{phase}: {a:.0f} MB at {SMALL} files, {b:.0f} MB at {LARGE}"


def directory_source_peak_rss(tmp_path: Path, files: int) -> list[float]:
    """Peak RSS (MB) of a first and an unchanged backup of ``files`` files as a `dir://`
    objects source, and of their restore into a `dir://` target."""
    source = tmp_path / "media"
    source.mkdir(parents=True)
    contents = make_tree(source, files, distinct=DISTINCT)
    env = {**os.environ, "LIFEBOAT_ACTOR": "test"}
    lb = dir_media(tmp_path, source).lb
    first = peak_rss_mb(tmp_path, env, lb, "backup", "media")
    second = peak_rss_mb(tmp_path, env, lb, "backup", "media")
    labels = lb.json("snapshots")[-1]["labels"]
    assert labels["objects"] == str(files) and labels["downloaded"] == "0"
    target = tmp_path / "restored"
    restore = peak_rss_mb(
        tmp_path,
        env,
        lb,
        "restore",
        "media",
        "--target",
        f"dir://{target}",
        "--recovery-key",
        str(tmp_path / "recovery.key"),
    )
    restored = {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert restored == contents
    return [first, second, restore]


def test_memory_of_a_directory_source_does_not_grow_with_the_number_of_files(tmp_path):
    """A `dir://` source is walked into a streamed tree like the files kind (before, at
    100,000 files of 0.5-4 KB: 469 MB first, 464 MB unchanged; a listing of every object,
    every entry and the whole parent held), and restored from it in bounded batches
    (before: 337 MB at 100,000 files, every object planned at once)."""
    small = directory_source_peak_rss(tmp_path / "small", SMALL)
    large = directory_source_peak_rss(tmp_path / "large", LARGE)
    per_10k = [(b - a) * 10_000 / (LARGE - SMALL) for a, b in zip(small, large, strict=True)]
    phases = ("first backup", "unchanged backup", "restore")
    for phase, growth, a, b in zip(phases, per_10k, small, large, strict=True):
        assert growth < GROWTH_MB, f"{phase}: {a:.0f} MB at {SMALL} files, {b:.0f} MB at {LARGE}"
