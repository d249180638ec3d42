"""A malicious insider with the state dir (issue #14) rewrites the caches a host keeps of
the repository there; the key file is elsewhere.

The snapshot summary decides which snapshot is "latest": moving the newest one's time back
would make a restore roll back to an older tree. Cache files carry a keyed tag
(repo/local_cache.py), so a rewritten one is ignored and rebuilt from the repository. In a
long history the rows a listing adds go to a recent file beside the summary, tagged under its
own name: rewritten, or replaced by the summary's own file, it is ignored too.

`check` reads every snapshot header from the storage but verifies again only those whose bytes
differ from the ones it verified before (a BLAKE3 of each, per side, kept in ``snapshots.json``). A
storage provider that swaps a header's signature trailer, helped by the insider rewriting
that digest, would have check vouch for the new bytes: the tag refuses the rewritten file.

The parent cache (``STATE/cache/<repository>/parents/``): A backup takes a cached entry for a file whose
identity (path, size, mtime, inode) is unchanged without reading it, so a forged line could
make the next snapshot record ``config.txt`` with the chunks of a file the insider got
backed up (an upload). Every block of lines carries a MAC under a key derived from the
writer's key file, which the state dir does not hold: the block with the forged line is not
used, its files are read again, and the backup says so (stderr, a snapshot label, the audit
entry). The defender is the real `lifeboat` executable."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import orjson
import pytest
import zstandard

from lifeboat.assets.registry import load_policy
from lifeboat.crypto.keys import BackupKey, load_backup_key
from lifeboat.repo import Repository
from lifeboat.repo import snapshot_cache as snapshot_cache_module
from lifeboat.repo.keyring import Keyring
from lifeboat.repo.local_cache import TAG_SIZE, CacheSeal
from lifeboat.repo.model import PARENT_CACHE_REJECTED, SnapshotInfo
from lifeboat.repo.parents import BLOCK_MARK, ParentFile, cache_key_of
from lifeboat.repo.snapshot_cache import HEADERS_LAYOUT, tag_label
from lifeboat.storage import open_storage
from lifeboat.storage.base import Storage
from tests.attacks.test_forged_history import GENUINE, Site, make_site
from tests.harness import Clock
from tests.harness.settle import settle

NEWER = b"the configuration as it is now, after the change\n"

UPLOAD = b"ssh-ed25519 AAAA... the insider's key, uploaded through the app\n"


@pytest.fixture
def site(tmp_path: Path, clock: Clock) -> Site:
    s = make_site(tmp_path, clock)
    (tmp_path / "app" / "upload.txt").write_bytes(UPLOAD)
    settle(tmp_path / "app")  # so the next backup takes both files from the cache
    return s


def cache_file(site: Site) -> Path:
    [path] = (load_policy(site.policy).state_dir / "cache").rglob("parents/*.json.zst")
    return path


def read_lines(path: Path) -> tuple[bytes, list[bytes]]:
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
    magic, *lines = raw.split(b"\n")
    return magic, [line for line in lines if line]


def fields(line: bytes) -> tuple[bytes, bytes, bytes]:
    path, identity, entry = line.split(b"\t", 2)
    return path, identity, entry


def graft(path: Path, resealed_by: ParentFile | None = None) -> int:
    """config.txt's line made to carry upload.txt's chunks: identity kept (so the walk takes
    it), its block's MAC line kept as found (the insider cannot compute one), or computed
    with ``resealed_by`` (the control: what only the key file's holder can do). The number
    of file lines in the cache."""
    magic, lines = read_lines(path)
    files = [line for line in lines if not line.startswith(BLOCK_MARK)]
    by_name = {orjson.loads(fields(line)[0]).rsplit("/", 1)[-1]: line for line in files}
    name, identity, entry = fields(by_name["config.txt"])
    upload = orjson.loads(fields(by_name["upload.txt"])[2])
    forged_entry = orjson.loads(entry)
    forged_entry.update({k: upload[k] for k in ("chunks", "size", "sha256") if k in upload})
    forged = name + b"\t" + identity + b"\t" + orjson.dumps(forged_entry)
    out = [forged if line == by_name["config.txt"] else line for line in lines]
    if resealed_by is None:
        body = b"".join(line + b"\n" for line in out)
    else:
        body = resealed_by.sealed_block(
            b"".join(line + b"\n" for line in out if not line.startswith(BLOCK_MARK))
        )
    path.write_bytes(zstandard.ZstdCompressor().compress(magic + b"\n" + body))
    return len(files)


def audit_entries(site: Site) -> list[dict[str, Any]]:
    log = load_policy(site.policy).state_dir / "audit.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_a_rewritten_parent_cache_line_is_not_used_and_the_backup_says_so(site: Site) -> None:
    site.backup("app")
    lines = graft(cache_file(site))  # both files' lines are in one block

    proc = site.run("backup", "app", "--json")  # the host's next scheduled backup
    [result] = json.loads(proc.stdout)
    assert result["ok"] and result["labels"][PARENT_CACHE_REJECTED] == str(lines) == "2"
    assert result["stats"]["reused_files"] == 0  # config.txt and upload.txt were read again
    assert "2 entries of the parent cache failed their MAC" in proc.stderr
    [details] = [
        e["details"] for e in audit_entries(site) if e["details"].get("snapshot") == result["snapshot"]
    ]
    assert details[PARENT_CACHE_REJECTED] == 2
    assert site.restored("app", "config.txt") == GENUINE


def test_control_the_same_graft_with_a_valid_mac_would_change_what_is_restored(site: Site) -> None:
    """Why the MAC matters: the walk trusts a line whose MAC holds. Computed here with the
    writer's key file, which the insider does not have."""
    site.backup("app")
    key = load_backup_key(load_policy(site.policy).repository.keyfile)
    cache = ParentFile(cache_file(site), cache_key_of(Keyring.for_backup(key).mac, "app"))
    graft(cache.path, resealed_by=cache)

    [result] = site.json("backup", "app")
    assert PARENT_CACHE_REJECTED not in result["labels"] and result["stats"]["reused_files"] == 2
    assert site.restored("app", "config.txt") == UPLOAD


def summary_file(site: Site) -> Path:
    [path] = (load_policy(site.policy).state_dir / "cache").rglob("snapshots-summary.json")
    return path


def move_newest_back(site: Site, retag: Callable[[str, bytes], bytes] | None = None) -> None:
    """The newest snapshot of app dated a year before the oldest in the cached summary: the
    insider edits the JSON and keeps the tag it finds (it cannot compute one), or ``retag``
    computes a valid one (the control)."""
    path = summary_file(site)
    stored = path.read_bytes()
    summary = orjson.loads(stored[:-TAG_SIZE])
    rows = sorted((row[2], snapshot_id) for snapshot_id, row in summary.items() if row[3] == "app")
    oldest, newest = rows[0][0], rows[-1][1]
    summary[newest][2] = str(int(oldest[:4]) - 1) + oldest[4:]
    data = orjson.dumps(summary)
    path.write_bytes(retag(path.name, data) if retag else data + stored[-TAG_SIZE:])


def changed_and_backed_up(site: Site, clock: Clock) -> None:
    site.backup("app")
    clock.advance(3600)
    (site.root / "app" / "config.txt").write_bytes(NEWER)
    site.backup("app")
    site.snapshot_ids("app")  # the recovery side lists too: every reader's summary is written


def test_a_rewritten_snapshot_summary_does_not_roll_a_restore_back(site: Site, clock: Clock) -> None:
    changed_and_backed_up(site, clock)
    newest = site.snapshot_ids("app")[-1]
    move_newest_back(site)
    assert site.restored("app", "config.txt") == NEWER
    assert site.snapshot_ids("app")[-1] == newest


def test_control_the_same_edit_with_a_valid_tag_would_roll_it_back(site: Site, clock: Clock) -> None:
    changed_and_backed_up(site, clock)
    key = load_backup_key(load_policy(site.policy).repository.keyfile)
    move_newest_back(site, CacheSeal(Keyring.for_backup(key).mac).seal)
    assert site.restored("app", "config.txt") == GENUINE


def vouch_for_a_new_trailer(site: Site, retag: Callable[[str, bytes], bytes] | None = None) -> str:
    """The storage provider flips a byte of the newest header's signature trailer (the
    name covers only the part before it) and the insider rewrites that header's cached
    digest to the new bytes, keeping the tag (or, the control, ``retag`` computes one)."""
    newest = site.snapshot_ids("app")[-1]
    header = site.root / "repo" / "snapshots" / newest
    header.chmod(0o644)
    raw = bytearray(header.read_bytes())
    raw[-1] ^= 1
    header.write_bytes(bytes(raw))
    [path] = (load_policy(site.policy).state_dir / "cache").rglob("snapshots.json")
    stored = path.read_bytes()
    entries = orjson.loads(stored[:-TAG_SIZE])
    verified = entries[newest][2]  # [size, mtime, verified, ...] (repo/snapshot_cache.py)
    assert "recovery" in verified  # what the first check (recovery key) verified
    entries[newest][2] = {side: blake3.blake3(bytes(raw)).hexdigest() for side in verified}
    data = orjson.dumps(entries)
    label = tag_label(path.name, HEADERS_LAYOUT)  # what the tag covers besides the data
    path.write_bytes(retag(label, data) if retag else data + stored[-TAG_SIZE:])
    return newest


def check_ran_clean(site: Site) -> None:
    site.backup("app")
    proc = site.run("check", "--json", *site.recovery)  # every header verified and remembered
    assert json.loads(proc.stdout)["problems"] == []


def test_a_rewritten_header_digest_does_not_make_check_vouch_for_a_swapped_signature(site: Site) -> None:
    check_ran_clean(site)
    newest = vouch_for_a_new_trailer(site)
    refused = [p for p in site.check_problems() if p["kind"] == "refused-snapshot"]
    assert [(p["snapshots"], "signature does not match" in str(p["message"])) for p in refused] == [
        ([newest[:12]], True)
    ]


def test_control_the_same_digest_with_a_valid_tag_would_be_believed(site: Site) -> None:
    check_ran_clean(site)
    key = load_backup_key(load_policy(site.policy).repository.keyfile)
    vouch_for_a_new_trailer(site, CacheSeal(Keyring.for_backup(key).mac).seal)
    proc = site.run("check", "--json", *site.recovery)
    assert json.loads(proc.stdout)["problems"] == []


def test_a_rewritten_recent_summary_of_a_long_history_does_not_roll_a_restore_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past SPLIT_FROM headers (8 here, not 512), a listing after a backup writes the new rows
    to ``snapshots-summary-recent.json`` beside the summary: the insider moves the newest
    row back there, keeping the tag, or puts the summary's own file in its place."""
    monkeypatch.setattr(snapshot_cache_module, "SPLIT_FROM", 8)
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, key, _ = Repository.create(storage, cache_dir=tmp_path / "cache")
    snaps = [backed_up(repo, n) for n in range(9)]
    repo.snapshots()  # the whole cache and summary written
    newest = backed_up(repo, 9)
    repo.snapshots()  # the newest one's row written to the recent file
    recent = tmp_path / "cache" / repo.id / "snapshots-summary-recent.json"

    def moved_back(retag: Callable[[str, bytes], bytes] | None) -> str | None:
        stored = recent.read_bytes()
        rows = orjson.loads(stored[:-TAG_SIZE])
        rows[newest.id][2] = snaps[0].time.replace(year=snaps[0].time.year - 1).isoformat()
        data = orjson.dumps(rows)
        recent.write_bytes(retag(recent.name, data) if retag else data + stored[-TAG_SIZE:])
        return latest(storage, key, tmp_path / "cache")

    assert moved_back(None) == newest.id
    recent.write_bytes(recent.with_name("snapshots-summary.json").read_bytes())
    assert latest(storage, key, tmp_path / "cache") == newest.id
    # (that choice read the newest header again and wrote the recent file anew)
    # the control: the same edit with a valid tag (the key file's, which the insider lacks)
    assert moved_back(repo.cache_seal.seal) == snaps[-1].id


def latest(storage: Storage, key: BackupKey, cache: Path) -> str | None:
    """The snapshot a backup would take as its parent, or a restore as latest."""
    return Repository.open(storage, backup_key=key, cache_dir=cache).latest_snapshot_id("app")


def backed_up(repo: Repository, n: int) -> SnapshotInfo:
    with repo.backup("app", "files") as session:
        session.add_bytes("config.txt", f"version {n}\n".encode())
        return session.commit()
