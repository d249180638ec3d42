"""A malicious insider with the state dir against the key-material parent cache.

A keys backup takes an unchanged file's entry from the parent cache without reading it.
There is one cache per escrow key (repo/repository.py, ``parent_scope``): after
`keys rotate --escrow` the files are read again and sealed to the new key, because chunks
sealed to the old key are what the departed custodian's shares still open. The insider
copies the cache written before the rotation over the one written after it, so that the
next backup would take the old chunks again. The lines are MAC'd under a key bound to the
escrow key's scope, derived from the key file (not in the state dir): they are refused,
the files are read again, the backup says so, and the new shares restore everything.
(Without the scope, the post-rotation snapshot of tests/keys/test_escrow_rotation.py holds
chunks the new shares cannot open, and its restore fails: checked by removing it.)"""

from __future__ import annotations

import json
from pathlib import Path

from lifeboat.assets.registry import load_policy
from lifeboat.repo.model import PARENT_CACHE_REJECTED
from lifeboat.repo.parents import SEALED_MAGIC, ZSTD_FRAME
from tests.harness.settle import settle
from tests.keys.test_escrow_rotation import new_shares
from tests.keys.test_keys import KeysEnv, env, shares  # noqa: F401  (a fixture)


def parent_caches(site: KeysEnv) -> set[Path]:
    return set((load_policy(site.policy).state_dir / "cache").rglob("parents/*.json.zst"))


def rotate(site: KeysEnv) -> None:
    site.run(
        "keys", "rotate", "--escrow", "--shares-out", str(site.root / "new-shares"),
        "--custodians", "alice,bob,dave", "--threshold", "2", *shares(site, "alice", "bob"),
    )  # fmt: skip


def test_the_cache_of_the_old_escrow_key_put_in_place_of_the_new_ones_is_refused(
    env: KeysEnv,  # noqa: F811
) -> None:
    env.run("backup", "platform-keys")
    [old_cache] = parent_caches(env)
    rotate(env)
    env.run("backup", "platform-keys")  # every file read again, sealed to the new key
    [new_cache] = parent_caches(env) - {old_cache}
    new_cache.write_bytes(old_cache.read_bytes())  # the insider's copy

    proc = env.run("backup", "platform-keys", "--json")
    [result] = json.loads(proc.stdout)
    files = result["stats"]["files"]
    assert result["ok"] and result["labels"][PARENT_CACHE_REJECTED] == str(files)
    assert result["stats"]["reused_files"] == 0  # nothing taken from the copied lines
    assert f"{files} entries of the parent cache failed their MAC" in proc.stderr

    target = env.root / "restored"
    restore = ("restore", "platform-keys", "--snapshot", result["snapshot"], "--target", str(target))
    restored = env.json(*restore, *new_shares(env, "bob", "dave"))
    assert len(restored["keys"]) == files and all(k["match"] for k in restored["keys"])
    # the departed custodian's quorum opens none of it
    old = env.run(*restore, "--force", *shares(env, "alice", "carol"), check=False)
    assert old.returncode != 0 and "escrow key" in old.stderr


def test_the_cache_tells_an_insider_nothing_to_test_a_guessed_key_against(env: KeysEnv) -> None:  # noqa: F811
    """Key material's entries name a plain SHA-256 of each file (checked at restore). The
    insider who reads the state dir must not find it there: a 6-digit PIN file would fall to
    a million guesses in a second. The scoped cache keeps its entries sealed."""
    import hashlib
    import io

    import zstandard

    pin = b"482913"
    (env.root / "platform-keys" / "pin.txt").write_bytes(pin)
    settle(env.root / "platform-keys" / "pin.txt")  # its entry goes into the cache, digest and all
    env.run("backup", "platform-keys")
    env.run("backup", "platform-keys")  # the unchanged files come from the cache, and go back to it
    assert env.json("snapshots")[-1]["stats"]["reused_files"] > 0

    state = load_policy(env.policy).state_dir
    readable = []
    for path in state.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            if raw.startswith(ZSTD_FRAME):  # written as a stream: no content size in its header
                raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
            readable.append(raw)
    digest = hashlib.sha256(pin).hexdigest().encode()
    assert parent_caches(env) and readable
    assert all(cache.read_bytes().startswith(SEALED_MAGIC) for cache in parent_caches(env))
    assert not any(digest in data or pin in data for data in readable)


def test_a_sealed_cache_with_a_byte_changed_or_cut_short_is_refused_and_reported(env: KeysEnv) -> None:  # noqa: F811
    """The insider cannot read the sealed cache, but may still change it: a changed byte
    (or a cut) in a sealed block makes that block not open. Nothing of the cache is used
    past it, the files are read again, and the backup says the cache was modified. A cut
    after the header leaves no block to fail: the missing final block is what refuses it."""
    env.run("backup", "platform-keys")
    [cache] = parent_caches(env)
    sealed = bytearray(cache.read_bytes())
    for damage in ("flip", "cut", "header only"):
        if damage == "flip":
            sealed[len(SEALED_MAGIC) + 40] ^= 0x01
            cache.write_bytes(bytes(sealed))
        elif damage == "cut":
            cache.write_bytes(bytes(sealed[: len(sealed) // 2]))
        else:
            cache.write_bytes(SEALED_MAGIC)

        proc = env.run("backup", "platform-keys", "--json")

        [result] = json.loads(proc.stdout)
        assert result["ok"] and result["stats"]["reused_files"] == 0, damage
        assert int(result["labels"][PARENT_CACHE_REJECTED]) >= 1, damage
        assert "entries of the parent cache failed their MAC" in proc.stderr
        sealed = bytearray(cache.read_bytes())  # rewritten whole by that backup

    target = env.root / "restored"
    restored = env.json("restore", "platform-keys", "--target", str(target), *shares(env, "alice", "bob"))
    assert restored["keys"] and all(k["match"] for k in restored["keys"])
