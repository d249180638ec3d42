"""The files part of the demo: back up a tree, change it, back up again, restore, compare."""

from __future__ import annotations

import filecmp
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lifeboat.assets.files import backup_paths, restore_snapshot
from lifeboat.crypto.keys import load_recovery_key
from lifeboat.repo import Repository
from lifeboat.runtime import cache_dir, storage_for

Step = Callable[[str], None]


@dataclass
class FilesDemoResult:
    files: int = 0
    first_bytes: int = 0
    first_seconds: float = 0.0
    second_new_bytes: int = 0
    second_stored_bytes: int = 0
    second_seconds: float = 0.0
    reused_files: int = 0
    restore_seconds: float = 0.0
    identical: bool = False
    differences: list[str] = field(default_factory=list)


def generate_tree(root: Path, rng: random.Random) -> None:
    (root / "config" / "nginx").mkdir(parents=True, exist_ok=True)
    (root / "uploads").mkdir(exist_ok=True)
    for i in range(200):
        (root / "config" / f"service-{i:03d}.conf").write_text(
            "\n".join(f"option_{j} = {rng.random():.6f}" for j in range(50))
        )
    for i in range(20):
        (root / "uploads" / f"image-{i:02d}.jpg").write_bytes(rng.randbytes(256 << 10))
    (root / "config" / "nginx" / "site.conf").write_text("server { listen 443 ssl; }\n")
    (root / "empty.flag").write_bytes(b"")
    if not (root / "current").is_symlink():
        os.symlink("config/nginx", root / "current")


def change_tree(root: Path, rng: random.Random) -> None:
    for i in range(0, 200, 20):
        (root / "config" / f"service-{i:03d}.conf").write_text(f"changed {rng.random()}\n")
    (root / "uploads" / "image-new.jpg").write_bytes(rng.randbytes(256 << 10))


def compare_trees(a: Path, b: Path) -> list[str]:
    problems: list[str] = []

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        problems.extend(f"{prefix}{n}: only in one tree" for n in cmp.left_only + cmp.right_only)
        _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common_files, shallow=False)
        problems.extend(f"{prefix}{n}: content differs" for n in mismatch + errors)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(a, b), "")
    return problems


def run_files_demo(policy: object, asset: str, source: Path, restore_to: Path, step: Step) -> FilesDemoResult:
    rng = random.Random(2026)
    result = FilesDemoResult()
    generate_tree(source, rng)
    repo = Repository.open(
        storage_for(policy),
        recovery_key=load_recovery_key(Path(policy.repository.recovery_key)),  # type: ignore[attr-defined]
        cache_dir=cache_dir(policy),
    )
    step("files: first backup")
    started = time.monotonic()
    first = backup_paths(repo, asset, [source])
    result.first_seconds = time.monotonic() - started
    result.files, result.first_bytes = first.stats.files, first.stats.bytes
    step("files: changing 10% of the config files and adding an upload")
    change_tree(source, rng)
    started = time.monotonic()
    second = backup_paths(repo, asset, [source])
    result.second_seconds = time.monotonic() - started
    result.second_new_bytes = second.stats.new_bytes
    result.second_stored_bytes = second.stats.stored_bytes
    result.reused_files = second.stats.reused_files
    step("files: restoring the second snapshot and comparing byte for byte")
    started = time.monotonic()
    restore_snapshot(repo, second, restore_to, force=True)
    result.restore_seconds = time.monotonic() - started
    result.differences = compare_trees(source, restore_to / source.name)
    result.identical = not result.differences
    return result
