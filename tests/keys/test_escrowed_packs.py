"""Maintenance of a repository holding key material, with the recovery key alone: `check
--read-data` passes without opening the escrowed packs, `prune` keeps them (their chunks are
unknown without the custodians' shares), and the key material restores afterwards; key
material and the same bytes in a files asset are stored apart (no cross dedup)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.harness import Clock
from tests.keys.test_keys import CANARY, KeysEnv, keys_env, make_key_material, shares


@pytest.fixture
def env(tmp_path: Path, clock: Clock) -> KeysEnv:
    make_key_material(tmp_path / "platform-keys")
    e = keys_env(tmp_path, clock)
    rk = tmp_path / "recovery.key"
    e.run("init", "--recovery-key-out", str(rk), "--shares-out", str(tmp_path / "shares"))
    return e


def stored_packs(env: KeysEnv) -> set[str]:
    return {p.name for p in (env.root / "repo" / "data").rglob("*") if p.is_file()}


def test_check_and_prune_with_the_recovery_key_keep_key_material(env):
    rk = ["--recovery-key", str(env.root / "recovery.key")]
    env.run("backup", "platform-keys")
    (env.root / "platform-keys" / "media-master.key").write_text("master-secret=rotated\n")
    env.run("backup", "platform-keys")
    packs = stored_packs(env)
    check = json.loads(env.run("check", "--read-data", "--json", *rk).stdout)
    assert check["problems"] == [] and check["packs_read"] == len(packs)
    env.run("prune", *rk)
    assert stored_packs(env) == packs  # nothing of the key material went
    first, _ = [s["id"] for s in json.loads(env.run("snapshots", "--json").stdout)]
    target = env.root / "restored"
    args = ["restore", "platform-keys", "--snapshot", first, "--target", str(target)]
    env.run(*args, *shares(env, "alice", "bob"))
    assert (target / "platform-keys" / "media-master.key").read_text() == f"master-secret={CANARY}\n"


def test_key_material_never_shares_chunks_with_a_files_asset(env, tmp_path):
    """The same bytes backed up as key material and as plain files are stored twice: a
    recovery-key reader of the files snapshot learns nothing about the key material."""
    copy = tmp_path / "copy-of-keys"
    shutil.copytree(env.root / "platform-keys", copy)
    policy = env.builder.files("plain", [copy], cls="critical").write(env.policy)
    assert policy == env.policy
    keys = json.loads(env.run("backup", "platform-keys", "--json").stdout)[0]["stats"]
    plain = json.loads(env.run("backup", "plain", "--json").stdout)[0]["stats"]
    # every chunk of the same six files stored again: none found among the escrowed ones
    assert keys["new_chunks"] >= 6 and plain["new_chunks"] >= 6
    assert plain["new_bytes"] >= keys["bytes"] > 0
    rk = ["--recovery-key", str(env.root / "recovery.key")]
    env.run("restore", "plain", "--target", str(tmp_path / "plain-out"), *rk)
    assert (tmp_path / "plain-out" / "copy-of-keys" / "media-master.key").read_text().endswith(f"{CANARY}\n")
    proc = env.run("restore", "platform-keys", "--target", str(tmp_path / "k"), *rk, check=False)
    assert proc.returncode == 2


def test_a_second_prune_leaves_the_index_files_of_key_material_alone(env):
    """Key material's packs are never repacked, so they are never planned: a prune with
    nothing to do rewrites none of the index files listing them."""
    rk = ["--recovery-key", str(env.root / "recovery.key")]
    env.run("backup", "platform-keys")
    (env.root / "platform-keys" / "media-master.key").write_text("master-secret=rotated\n")
    env.run("backup", "platform-keys")
    env.run("prune", "--repack-small", *rk)
    first = _index_files(env)
    env.run("prune", "--repack-small", *rk)
    assert _index_files(env) == first


def _index_files(env) -> list[str]:
    return sorted(p.name for p in (env.root / "repo" / "index").rglob("*") if p.is_file())
