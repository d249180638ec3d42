"""A malicious insider with the state dir (issue #14) puts WAL where lifeboat picks it up:
the prefetch directory `wal fetch` hands segments from (a standby's restore_command), and the
spool `wal push --async` drains into the repository, signed. Or points `wal push` elsewhere:
the slice of the policy a push or fetch keeps once it validated it (cli/policy_slice.py)
names the repository. All are files tagged (the slice: encrypted) with a key derived from
the key file (repo/local_cache.py), which the state dir does not hold: a planted or
rewritten file is never replayed, archived or followed. Controls show the same file with a
valid tag would be, so the tag is what stops it. The defender is the real `lifeboat`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from lifeboat import runtime
from lifeboat.assets.postgres.wal import spool_segment
from lifeboat.assets.registry import load_policy
from lifeboat.repo.local_cache import CacheSeal
from tests.attacks.test_forged_refs import SEGMENTS, Site, make_pg_site, wal_file
from tests.harness import Clock

INSIDER_WAL = b"WAL of the insider's choosing"


@pytest.fixture
def site(tmp_path: Path, clock: Clock) -> Site:
    return make_pg_site(tmp_path, clock)


def state_dir(site: Site) -> Path:
    return load_policy(site.policy).state_dir


def push(site: Site, name: str, content: bytes) -> None:
    site.run("wal", "push", "--asset", "db", str(wal_file(site, name, content)))


def test_a_segment_planted_in_the_prefetch_dir_is_not_replayed(site: Site) -> None:
    push(site, SEGMENTS[0], b"genuine 1")
    prefetched = state_dir(site) / "wal-prefetch" / "db"
    prefetched.mkdir(parents=True, exist_ok=True)
    (prefetched / SEGMENTS[0]).write_bytes(INSIDER_WAL)  # in place of an archived segment
    (prefetched / SEGMENTS[3]).write_bytes(INSIDER_WAL)  # one the archive does not hold
    assert site.fetch(SEGMENTS[0]) == b"genuine 1"
    assert site.fetch(SEGMENTS[3]) is None  # "not archived", whatever the state dir holds
    assert not (prefetched / SEGMENTS[3]).exists()  # dropped, not left to be tried again


def test_control_a_prefetched_segment_with_a_valid_tag_is_replayed(site: Site) -> None:
    push(site, SEGMENTS[0], b"genuine 1")
    prefetched = state_dir(site) / "wal-prefetch" / "db"
    prefetched.mkdir(parents=True, exist_ok=True)
    seal = runtime.local_seal(load_policy(site.policy))  # from the key file
    (prefetched / SEGMENTS[3]).write_bytes(seal.seal(f"wal-prefetch/db/{SEGMENTS[3]}", INSIDER_WAL))
    assert site.fetch(SEGMENTS[3]) == INSIDER_WAL


def test_a_rewritten_spooled_segment_is_not_archived(site: Site) -> None:
    policy = load_policy(site.policy)
    spool = policy.state_dir / "wal-spool" / "db"
    seal = runtime.local_seal(policy)
    spool_segment(spool, wal_file(site, SEGMENTS[0], b"genuine 1"), "db", seal)  # archive_command
    spool_segment(spool, wal_file(site, SEGMENTS[1], b"genuine 2"), "db", seal)
    (spool / SEGMENTS[1]).write_bytes(INSIDER_WAL)  # rewritten before the drainer ran
    (spool / SEGMENTS[2]).write_bytes(INSIDER_WAL)  # planted

    proc = site.run("wal", "drain", "--asset", "db", check=False)
    assert proc.returncode != 0 and "fails its tag" in proc.stderr, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert site.fetch(SEGMENTS[0]) == b"genuine 1"  # the genuine one went through
    assert site.fetch(SEGMENTS[1]) is None and site.fetch(SEGMENTS[2]) is None
    assert (spool / SEGMENTS[1]).exists()  # kept for the operator, never deleted


def test_control_a_spooled_segment_with_a_valid_tag_is_archived(site: Site) -> None:
    policy = load_policy(site.policy)
    spool = policy.state_dir / "wal-spool" / "db"
    spool.mkdir(parents=True, exist_ok=True)
    (spool / SEGMENTS[2]).write_bytes(
        runtime.local_seal(policy).seal(f"wal-spool/db/{SEGMENTS[2]}", INSIDER_WAL)
    )
    site.run("wal", "drain", "--asset", "db")
    assert site.fetch(SEGMENTS[2]) == INSIDER_WAL


def _push_settings(site: Site) -> Path:
    [kept] = (state_dir(site) / "cache" / "policy-slice").iterdir()  # written by the first push
    return kept


def _key_seal(site: Site) -> CacheSeal:
    """The seal the key file gives: the test's, to read what was kept and for the controls."""
    return runtime.local_seal(load_policy(site.policy))


def _kept_entry(site: Site, kept: Path) -> dict[str, Any]:
    data = _key_seal(site).decrypt(f"policy-slice/{kept.name}", kept.read_bytes())
    assert data is not None
    entry: dict[str, Any] = json.loads(data)
    return entry


def _rewritten(entry: dict[str, Any], **changes: str) -> bytes:
    for key, value in changes.items():
        if key == "url":
            entry["slice"]["repository"]["url"] = value
        else:
            entry["slice"]["wal"]["name"] = value
    return json.dumps(entry).encode()


def _insiders_forgery(kept: Path, data: bytes) -> bytes:
    """What an insider without the key file can write in a slice's place: an envelope under
    a key of their own (they cannot read the genuine one either)."""
    insiders_key = CacheSeal(lambda context: hashlib.sha256(b"insider's key" + context).digest())
    return insiders_key.encrypt(f"policy-slice/{kept.name}", data)


def test_the_kept_push_settings_are_unreadable_without_the_key(site: Site) -> None:
    push(site, SEGMENTS[0], b"genuine 1")
    kept = _push_settings(site)
    assert str(site.root / "repo").encode() not in kept.read_bytes()  # encrypted, not just tagged
    assert _kept_entry(site, kept)["slice"]["repository"]["url"] == f"file://{site.root / 'repo'}"


def test_rewritten_push_settings_do_not_send_wal_elsewhere(site: Site) -> None:
    push(site, SEGMENTS[0], b"genuine 1")
    kept = _push_settings(site)
    insiders = site.root / "insiders-repo"
    insiders.mkdir()
    genuine = _kept_entry(site, kept)
    kept.write_bytes(_insiders_forgery(kept, _rewritten(genuine, url=f"file://{insiders}")))

    push(site, SEGMENTS[1], b"genuine 2")
    assert site.fetch(SEGMENTS[1]) == b"genuine 2"  # archived where the policy says
    assert list(insiders.iterdir()) == []
    rebuilt = _kept_entry(site, kept)  # and the settings validated again
    assert rebuilt["slice"]["repository"]["url"] == f"file://{site.root / 'repo'}"
    # a plain file (no envelope at all) is not followed either
    kept.write_bytes(_rewritten(rebuilt, url=f"file://{insiders}"))
    push(site, SEGMENTS[2], b"genuine 3")
    assert site.fetch(SEGMENTS[2]) == b"genuine 3" and list(insiders.iterdir()) == []
    # even encrypted with the key, a URL the policy file does not name is not followed
    kept.write_bytes(
        _key_seal(site).encrypt(f"policy-slice/{kept.name}", _rewritten(rebuilt, url=f"file://{insiders}"))
    )
    push(site, SEGMENTS[3], b"genuine 4")
    assert site.fetch(SEGMENTS[3]) == b"genuine 4" and list(insiders.iterdir()) == []


def test_rewritten_settings_do_not_end_a_replay_early(site: Site) -> None:
    """`wal fetch` keeps the same slice: pointed at an empty repository, it would answer
    "not archived" and PostgreSQL would end recovery there, silently short of its target."""
    push(site, SEGMENTS[0], b"genuine 1")
    push(site, SEGMENTS[1], b"genuine 2")
    kept = _push_settings(site)
    empty = site.root / "empty-repo"
    empty.mkdir()
    kept.write_bytes(_insiders_forgery(kept, _rewritten(_kept_entry(site, kept), url=f"file://{empty}")))
    assert site.fetch(SEGMENTS[1]) == b"genuine 2"
    assert _kept_entry(site, kept)["slice"]["repository"]["url"] != f"file://{empty}"


def test_rewritten_push_settings_do_not_archive_wal_under_another_asset(site: Site) -> None:
    push(site, SEGMENTS[0], b"genuine 1")
    kept = _push_settings(site)
    forged = _rewritten(_kept_entry(site, kept), asset="web")  # the genuine digest kept
    # under a key of the insider's own, and as plain JSON (the slice's old, tagged form)
    for segment, planted in ((SEGMENTS[1], _insiders_forgery(kept, forged)), (SEGMENTS[2], forged)):
        kept.write_bytes(planted)
        push(site, segment, b"genuine")
        kept.unlink()  # the fetch validates the policy: db's
        assert site.fetch(segment) == b"genuine"  # archived as db's


def test_control_push_settings_with_a_valid_tag_are_followed(site: Site) -> None:
    push(site, SEGMENTS[0], b"genuine 1")
    kept = _push_settings(site)
    forged = _rewritten(_kept_entry(site, kept), asset="web")
    kept.write_bytes(_key_seal(site).encrypt(f"policy-slice/{kept.name}", forged))
    push(site, SEGMENTS[1], b"genuine 2")
    kept.unlink()  # the fetch validates the policy: db's
    assert site.fetch(SEGMENTS[1]) is None  # archived as web's, not where db's replay looks
