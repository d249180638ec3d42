"""A PostgreSQL restore into a filesystem that is too small (#16 item 3): refused up front
with figures that differ, and, when the disk fills midway, nothing of the restore is left
behind to block the next attempt. A real tmpfs, mounted by the test."""

from __future__ import annotations

import errno
import os
import pwd
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.pgsandbox import PgSandbox

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")

MIB = 1 << 20


@contextmanager
def tmpfs(where: Path, size: int, owner: str | None) -> Iterator[Path]:
    where.mkdir(exist_ok=True)
    entry = pwd.getpwnam(owner or "root")
    opts = f"size={size},uid={entry.pw_uid},gid={entry.pw_gid},mode=0755"
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def archived_history(pg: PgSandbox, segments: int) -> None:
    pg.run("backup", "db")
    for i in range(segments):
        pg.sql(f"insert into items (label) values ('row {i}')")
        pg.switch_and_wait_archived()


def needed_mib(stderr: str) -> float:
    match = re.search(r"([\d.]+) MiB needed \(([\d.]+) MiB data \+ ([\d.]+) MiB WAL", stderr)
    assert match, stderr
    total, data, wal = (float(g) for g in match.groups())
    assert wal >= 4 * 16 and abs(total - data - wal) < 0.2, stderr
    return total


def fill_when_started(mount: Path, started: Path, restore: subprocess.Popen[str]) -> None:
    """Another writer takes the disk once the restore has passed its check and begun."""
    deadline = time.monotonic() + 120
    while not started.exists():
        assert restore.poll() is None, "the restore finished before it could be squeezed"
        assert time.monotonic() < deadline, "the restore never started writing"
        time.sleep(0.005)
    fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    block = b"\0" * MIB
    try:
        while True:  # to the last byte: the restore is writing at the same time
            os.write(fd, block)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_restore_refused_up_front_cleaned_after_disk_full_and_retried(pg: PgSandbox):
    archived_history(pg, 5)
    mount = pg.root / "small"
    target = mount / "restored"
    spool = mount / ".restored.lifeboat-wal"

    with tmpfs(mount, 8 * MIB, pg.user):
        refused = pg.run("restore", "db", "--target", str(target), check=False)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith("lifeboat: error: not enough space for the restore into")
        assert "8.0 MiB free" in refused.stderr or "7.9 MiB free" in refused.stderr
        needed = needed_mib(refused.stderr)
        assert os.listdir(mount) == []

    # big enough by the estimate; another writer then takes the disk midway
    size = int(needed * MIB) + 24 * MIB
    with tmpfs(mount, size, pg.user):
        restore = pg.popen("restore", "db", "--target", str(target), text=True)
        fill_when_started(mount, spool, restore)
        _, stderr = restore.communicate(timeout=300)
        assert restore.returncode == 2, stderr
        lines = stderr.strip().splitlines()
        assert lines[0].startswith(f"lifeboat: error: no space left on the filesystem of {target}")
        assert "removed the partial data directory and the staged WAL" in lines[0]
        assert len(lines) <= 2 and "internal error" not in stderr
        assert os.listdir(mount) == ["filler"], "the restore left its partial data or WAL spool"

        (mount / "filler").unlink()
        retry = pg.run("restore", "db", "--target", str(target), "--json")
        assert retry.returncode == 0
        assert (target / "PG_VERSION").read_text().strip() == "15"
        assert len(list(spool.iterdir())) >= 5


def test_a_file_with_two_names_is_freed_once(tmp_path: Path) -> None:
    """--force over a stopped copy counts what its replacement frees: the copy's pg_wal and
    the spool beside it hold the same segments (hard links), which free their bytes once.
    Counted twice, the up-front space check let through a restore that then ran out."""
    from lifeboat.assets.postgres.restore import _tree_size

    target, spool = tmp_path / "copy", tmp_path / ".copy.lifeboat-wal"
    (target / "pg_wal").mkdir(parents=True)
    spool.mkdir()
    (spool / "000000010000000000000001").write_bytes(b"w" * 1000)
    os.link(spool / "000000010000000000000001", target / "pg_wal" / "000000010000000000000001")
    (target / "PG_VERSION").write_bytes(b"15\n")
    counted: set[tuple[int, int]] = set()
    assert _tree_size(target, counted) == 1003 and _tree_size(spool, counted) == 0
    assert _tree_size(spool) == 1000  # alone, each name is its bytes
