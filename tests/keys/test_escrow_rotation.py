"""`keys rotate --escrow`: a departed custodian is cut off from key material backed up after
the rotation. A new escrow key is split among the custodians given; key material backed up
from then on is sealed to it only, so M shares of the old escrow key (the departed
custodian's among them) open nothing written afterwards, while the new shares do. What was
sealed before stays sealed to the old key (packs are immutable; not re-sealed)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness.settle import settle
from tests.keys.test_keys import CANARY, KeysEnv, shares


def new_shares(env: KeysEnv, *names: str) -> list[str]:
    return [arg for n in names for arg in ("--share", str(env.root / "new-shares" / f"{n}.share"))]


def test_a_departed_custodians_old_shares_open_no_key_material_written_after_the_rotation(
    env: KeysEnv,
) -> None:
    env.run("backup", "platform-keys")
    before = env.json("snapshots")[0]["id"]
    rotated = env.json(
        "keys",
        "rotate",
        "--escrow",
        "--shares-out",
        str(env.root / "new-shares"),
        "--custodians",
        "alice,bob,dave",  # carol left
        "--threshold",
        "2",
        *shares(env, "alice", "bob"),
    )
    escrow = rotated["escrow_key"]
    assert escrow["old_fingerprint"] != escrow["new_fingerprint"] and escrow["custodians"] == [
        "alice",
        "bob",
        "dave",
    ]
    assert sorted(Path(p).name for p in rotated["shares"]) == ["alice.share", "bob.share", "dave.share"]
    assert all(Path(p).stat().st_mode & 0o777 == 0o600 for p in rotated["shares"])

    (env.root / "platform-keys" / "after.key").write_text("written-after-the-rotation\n")
    settle(env.root / "platform-keys" / "after.key")  # the third backup takes it from the cache
    env.run("backup", "platform-keys")
    after = next(s["id"] for s in env.json("snapshots") if s["id"] != before)

    # carol (gone) and alice: two old shares, a full quorum of the old escrow key
    target = env.root / "by-carol"
    old = env.run(
        "restore",
        "platform-keys",
        "--snapshot",
        after,
        "--target",
        str(target),
        *shares(env, "alice", "carol"),
        check=False,
    )
    assert old.returncode != 0 and old.stderr.startswith("lifeboat: error: "), old.stderr
    assert "Traceback" not in old.stderr and "escrow key" in old.stderr
    assert not (target / "platform-keys" / "after.key").exists()
    verify = env.run("escrow", "verify-share", str(env.root / "shares" / "carol.share"), check=False)
    assert verify.returncode != 0 and "key-material escrow key" in verify.stderr

    # the new shares open what was written after; dave, new, is one of the quorum
    fresh = env.root / "by-dave"
    env.run(
        "restore",
        "platform-keys",
        "--snapshot",
        after,
        "--target",
        str(fresh),
        *new_shares(env, "bob", "dave"),
    )
    assert (fresh / "platform-keys" / "after.key").read_text() == "written-after-the-rotation\n"
    # what was sealed before the rotation still opens with the old shares (not re-sealed)
    env.run(
        "restore",
        "platform-keys",
        "--snapshot",
        before,
        "--target",
        str(env.root / "old"),
        *shares(env, "alice", "bob"),
    )

    # maintenance with either generation's shares finds nothing wrong
    for quorum in (new_shares(env, "bob", "dave"), shares(env, "alice", "bob")):
        checked = env.run("check", "--json", *quorum, check=False)
        assert checked.returncode == 0 and json.loads(checked.stdout)["problems"] == [], checked.stdout

    # the files unchanged since before the rotation were read again, not taken from the
    # parent (their chunks are sealed to the old key); the next backup, under the same
    # escrow key, takes every unchanged file from its parent
    env.run("backup", "platform-keys")
    listed = env.json("snapshots")
    third = next(s for s in listed if s["id"] not in (before, after))
    stats = {s["id"]: s["stats"] for s in listed}
    assert stats[before]["files"] > 1 and stats[after]["reused_files"] == 0
    assert third["stats"]["reused_files"] == third["stats"]["files"] == stats[after]["files"]

    audit_text = (env.root / ".lifeboat" / "audit.jsonl").read_text()
    entries = [json.loads(line) for line in audit_text.splitlines()]
    [entry] = [e for e in entries if e["operation"] == "keys-rotate-escrow"]
    assert entry["details"]["new_fingerprint"] == escrow["new_fingerprint"]
    assert entry["details"]["custodian_names"] == ["alice", "bob", "dave"]
    mnemonic = (env.root / "new-shares" / "dave.share").read_text().splitlines()[1]
    for text in (*env.outputs, audit_text):
        assert CANARY not in text and mnemonic not in text and " ".join(mnemonic.split()[:4]) not in text


def test_escrow_rotation_refusals_are_one_line(env: KeysEnv) -> None:
    out = str(env.root / "new-shares")
    no_dir = env.run("keys", "rotate", "--escrow", *shares(env, "alice", "bob"), check=False)
    assert no_dir.returncode != 0 and "needs --shares-out DIR" in no_dir.stderr
    one = env.run("keys", "rotate", "--escrow", "--shares-out", out, *shares(env, "alice"), check=False)
    assert (
        one.returncode != 0 and one.stderr.startswith("lifeboat: error: ") and "Traceback" not in one.stderr
    )
    assert not Path(out).exists() or not any(Path(out).iterdir())


def test_an_escrow_rotation_planted_with_a_backup_key_is_ignored_and_reported(env: KeysEnv) -> None:
    """A compromised backup host (its key file and storage credentials) publishes its own
    escrow key as a 'rotation' of the genuine one, signed by a root it made up: writers keep
    sealing key material to the genuine key, and `check` names the plant."""
    import base64
    import secrets

    from lifeboat import runtime
    from lifeboat.assets.registry import load_policy
    from lifeboat.crypto.escrow_key import generate_escrow
    from lifeboat.crypto.writers import RootKey
    from lifeboat.repo.escrow import current_escrow, put_escrow_rotation

    repo = runtime.open_for_write(load_policy(env.policy))
    try:
        genuine = current_escrow(repo.config, repo)
        assert genuine is not None and repo.keyring.recovery is None
        mine, _ = generate_escrow(repo.id, 1, ["mallory"])
        fake_root = RootKey.derive(
            repo.id, secrets.token_bytes(32), base64.b64decode(repo.config["recovery_public"])
        )
        put_escrow_rotation(repo, fake_root, mine, genuine)
        assert current_escrow(repo.config, repo) == genuine
    finally:
        repo.close()

    (env.root / "platform-keys" / "after.key").write_text("after-the-plant\n")
    env.run("backup", "platform-keys")
    target = env.root / "restored"
    env.run("restore", "platform-keys", "--target", str(target), *shares(env, "alice", "bob"))
    assert (target / "platform-keys" / "after.key").read_text() == "after-the-plant\n"
    proc = env.run("check", "--json", *shares(env, "alice", "bob"), check=False)
    assert proc.returncode == 1
    [problem] = json.loads(proc.stdout)["problems"]
    assert (
        problem["kind"] == "escrow-key"
        and problem["object"] == f"records/escrow-keys/{mine.fingerprint}.json"
    )
    assert "not signed" in problem["message"] or "root key" in problem["message"], problem
