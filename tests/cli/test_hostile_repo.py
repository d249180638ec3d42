"""A repository damaged or crafted by a hostile host: every reader fails with an error that
names the object, exits 1 and keeps its memory bounded (never a traceback or a crash)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from lifeboat.crypto.keys import load_recovery_key
from lifeboat.repo import Repository
from lifeboat.repo.format import BLOB_ZSTD, index_name, pack_name
from lifeboat.repo.index import write_index
from lifeboat.repo.packer import _OpenPack
from lifeboat.storage import open_storage
from tests.cli.conftest import Cli, write_policy

BOMB_SIZE = 200 << 20

# Runs lifeboat as its own child and reports that child's peak RSS (KiB) on the last line
# of stderr, so the measure covers the lifeboat process alone, not anything this test run
# started earlier.
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "print('peak-rss-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


@pytest.fixture
def files_cli(tmp_path: Path) -> Cli:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.bin").write_bytes(os.urandom(4096))
    policy = write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}")
    cli = Cli(policy=policy, root=tmp_path, source=source)
    cli.env["LIFEBOAT_ACTOR"] = "test"
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    cli.run("backup", "config")
    return cli


def run_measured(cli: Cli, *args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    proc = cli.shell([sys.executable, "-c", PEAK_RSS, *cli.command(*args)], check=False)
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("peak-rss-kib"), proc.stderr
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, "\n".join(lines[:-1])), int(
        lines[-1].split()[1]
    )


def open_full(cli: Cli) -> Repository:
    storage = open_storage(f"file://{cli.root / 'repo'}")
    return Repository.open(storage, recovery_key=load_recovery_key(cli.root / "recovery.key"))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def plant_bomb(cli: Cli) -> tuple[str, str]:
    """Replace the chunk of a.bin by a validly encrypted 6 KiB blob that expands to 200 MiB
    (what a backup host, which holds the backup key, can write). Returns (chunk, pack)."""
    repo = open_full(cli)
    entry = next(e for e in repo.reader(repo.snapshots()[0]).entries() if e.path.endswith("a.bin"))
    chunk = entry.chunks[0]
    old_pack = repo.index().get(chunk)
    assert old_pack is not None
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(BOMB_SIZE))
    assert len(bomb) < 8 << 10
    pack = _OpenPack(repo.keyring, repo.metadata.seal_table)
    pack.add(chunk, "data", bytes([BLOB_ZSTD]) + bomb, entry.size)
    pack_id, data, pack_entry = pack.finish()
    repo.storage.put(pack_name(pack_id), data)
    write_index(repo.storage, [pack_entry], repo.metadata)
    # the honest copy goes: its pack and every index naming it
    root = cli.root / "repo"
    (root / pack_name(old_pack.pack)).unlink()
    for name, packs in repo.index().files.items():
        if old_pack.pack in packs:
            (root / name).unlink()
    return chunk, pack_id


def test_decompression_bomb_is_refused_with_bounded_memory(files_cli: Cli) -> None:
    chunk, pack_id = plant_bomb(files_cli)
    key = ["--recovery-key", str(files_cli.root / "recovery.key")]
    restore, restore_rss = run_measured(
        files_cli, "restore", "config", "--target", str(files_cli.root / "out"), *key
    )
    assert restore.returncode == 1, restore.stderr
    lines = error_lines(restore.stderr)
    assert lines[0].startswith("lifeboat: error: ") and len(lines) <= 2, restore.stderr
    assert chunk[:16] in lines[0] and pack_id in lines[0] and "Traceback" not in restore.stderr
    check, check_rss = run_measured(files_cli, "check", "--read-data", *key)
    assert check.returncode == 1 and "Traceback" not in check.stderr
    assert f"corrupt-chunk data/{pack_id[:2]}/{pack_id}" in check.stdout.replace("\n", " ")
    # Without a bound, decoding alone would hold the 200 MiB it expands to.
    assert restore_rss < 190 << 10 and check_rss < 190 << 10, (restore_rss, check_rss)


def test_zeroed_pack_header_is_an_attributed_error(files_cli: Cli) -> None:
    repo = open_full(files_cli)
    packs = sorted(repo.index().packs())
    for pack_id in packs:
        path = files_cli.root / "repo" / pack_name(pack_id)
        data = bytearray(path.read_bytes())
        data[:100] = bytes(100)  # magic, version and wrapped data key
        path.chmod(0o600)
        path.write_bytes(bytes(data))
    key = ["--recovery-key", str(files_cli.root / "recovery.key")]
    check = files_cli.run("check", "--read-data", *key, check=False)
    assert check.returncode == 1, check.stderr
    assert "Traceback" not in check.stderr and "internal error" not in check.stderr
    out = check.stdout.replace("\n", " ")
    for pack_id in packs:
        assert f"data/{pack_id[:2]}/{pack_id}" in out
    restore = files_cli.run("restore", "config", "--target", str(files_cli.root / "out"), *key, check=False)
    assert restore.returncode == 1, restore.stderr
    lines = error_lines(restore.stderr)
    assert lines[0].startswith("lifeboat: error: ") and "data/" in lines[0] and "header" in lines[0]


def test_truncated_index_is_an_attributed_error(files_cli: Cli) -> None:
    index_dir = files_cli.root / "repo" / "index"
    names = sorted(p.name for p in index_dir.iterdir())
    for name in names:
        path = index_dir / name
        path.chmod(0o600)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    key = ["--recovery-key", str(files_cli.root / "recovery.key")]
    check = files_cli.run("check", *key, check=False)
    assert check.returncode == 1 and "Traceback" not in check.stderr
    out = check.stdout.replace("\n", " ")
    for name in names:
        assert f"corrupt-index {index_name(name)}" in out
    # This host restores from the copies it kept of the index files it wrote (the packs are
    # intact); a host without them, as a recovery host is, must say what is damaged.
    here = files_cli.run("restore", "config", "--target", str(files_cli.root / "here"), *key)
    assert here.returncode == 0
    assert (files_cli.root / "here" / "source" / "a.bin").read_bytes() == (
        files_cli.source / "a.bin"
    ).read_bytes()
    for copies in (files_cli.root / ".lifeboat").glob("**/index"):
        shutil.rmtree(copies)
    restore = files_cli.run("restore", "config", "--target", str(files_cli.root / "out"), *key, check=False)
    assert restore.returncode == 1 and "Traceback" not in restore.stderr
    lines = error_lines(restore.stderr)
    assert lines[0].startswith("lifeboat: error: ") and "missing" in lines[0]
    assert any(index_name(names[0]) in line or "index/" in line for line in lines[1:]), restore.stderr


def test_damaged_snapshot_is_listed_as_damaged_and_exits_1(files_cli: Cli) -> None:
    files_cli.run("backup", "config")
    good = json.loads(files_cli.run("snapshots", "--json").stdout)
    assert len(good) == 2
    victim = files_cli.root / "repo" / "snapshots" / good[0]["id"]
    victim.chmod(0o600)
    victim.write_bytes(victim.read_bytes()[:-10])
    listing = files_cli.run("snapshots", check=False)
    assert listing.returncode == 1 and "Traceback" not in listing.stderr
    assert "1 snapshot(s)" in listing.stdout and "damaged" in listing.stdout
    assert f"snapshots/{good[0]['id']}" in listing.stdout.replace("\n", "")
    as_json = files_cli.run("snapshots", "--json", check=False)
    assert as_json.returncode == 1
    rows = {row["id"]: row for row in json.loads(as_json.stdout)}
    assert rows[good[0]["id"]]["damaged"] is True and not rows[good[1]["id"]].get("damaged")


def test_object_renamed_to_another_id_is_detected(files_cli: Cli) -> None:
    """Ids are the SHA-256 of the bytes: a valid snapshot copied under another id (a replay)
    is refused even though its MAC is valid."""
    snaps = files_cli.root / "repo" / "snapshots"
    (original,) = list(snaps.iterdir())
    forged = snaps / ("f" * 64)
    forged.write_bytes(original.read_bytes())
    listing = files_cli.run("snapshots", check=False)
    assert listing.returncode == 1
    assert "content hash differs" in listing.stdout and "1 snapshot(s)" in listing.stdout
