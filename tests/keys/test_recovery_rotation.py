"""Recovery-key rotation, passphrase-protected shares and typing shares on a terminal."""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import time
from pathlib import Path

import pytest

from tests.harness import LifeboatCli
from tests.keys.test_keys import CANARY, KeysEnv, keys_env, shares


def snapshot_ids(env: KeysEnv, *creds: str) -> list[str]:
    """Every writer's snapshots (headers are sealed: each writer key opens only its own)."""
    return [s["id"] for s in json.loads(env.run("snapshots", "--json", *creds).stdout)]


def restore_args(env: KeysEnv, snap: str, target: Path, *creds: str) -> list[str]:
    return ["restore", "platform-keys", "--snapshot", snap, "--target", str(target), *creds]


def test_recovery_rotation_new_shares_open_everything_old_shares_only_the_past(env):
    env.run("backup", "platform-keys")
    out = json.loads(
        env.run(
            "keys",
            "rotate",
            "--recovery",
            *shares(env, "alice", "bob"),
            "--shares-out",
            str(env.root / "shares2"),
            "--json",
        ).stdout
    )
    assert out["recovery_fingerprint"] != out["previous_recovery_fingerprint"]
    (env.root / "platform-keys" / "after.key").write_text("written after rotation\n")
    env.run("backup", "platform-keys")
    new = [a for n in ("bob", "carol") for a in ("--share", str(env.root / "shares2" / f"{n}.share"))]
    before, after = snapshot_ids(env, *new)
    # the new files carry new shares of the (unchanged) key-material escrow key too
    for snap in (before, after):
        env.run(*restore_args(env, snap, env.root / f"new-{snap[:8]}", *new))
    assert (env.root / f"new-{after[:8]}" / "platform-keys" / "after.key").exists()
    assert not (env.root / f"new-{before[:8]}" / "platform-keys" / "after.key").exists()
    # the old shares still open what was written before; the snapshot header written after
    # is sealed to the new recovery key (repo/sealed.py), so they do not even read what it
    # lists, although its key material is sealed to the unchanged escrow key
    env.run(*restore_args(env, before, env.root / "old-before", *shares(env, "alice", "carol")))
    proc = env.run(
        *restore_args(env, after, env.root / "old-after", *shares(env, "alice", "carol")), check=False
    )
    assert proc.returncode == 1 and "does not open" in proc.stderr and "Traceback" not in proc.stderr
    # an old key-material share and a new one are two different splits: they do not combine
    mixed = [*shares(env, "alice"), "--share", str(env.root / "shares2" / "carol.share")]
    proc = env.run(*restore_args(env, after, env.root / "mixed", *mixed), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # a second rotation must start from the newest key, not the retired one
    stale = env.run(
        "keys",
        "rotate",
        "--recovery",
        *shares(env, "alice", "bob"),
        "--shares-out",
        str(env.root / "shares3"),
        check=False,
    )
    assert stale.returncode == 2 and "newest recovery key" in stale.stderr
    verified = json.loads(
        env.run("escrow", "verify-share", str(env.root / "shares2" / "carol.share"), "--json").stdout
    )
    assert verified["valid"]
    texts = [*env.outputs, (env.root / ".lifeboat" / "audit.jsonl").read_text()]
    assert all(CANARY not in t for t in texts)


def test_a_forged_rotation_record_is_not_trusted(env):
    """A backup-key holder can write records; it still cannot make its own key a recovery key."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from lifeboat.crypto.envelope import wrap_key
    from lifeboat.crypto.keys import RecoveryKey
    from lifeboat.repo.recovery_chain import CHAIN_CONTEXT

    env.run("backup", "platform-keys")
    config = json.loads((env.root / "repo" / "config").read_bytes())
    attacker = RecoveryKey.generate(config["id"])
    bogus_previous = X25519PrivateKey.generate().private_bytes_raw()
    record = {
        "generation": 1,
        "recovery_public": base64.b64encode(attacker.public).decode(),
        "recovery_fingerprint": attacker.fingerprint(),
        "previous_fingerprint": config["recovery_fingerprint"],
        "previous_wrapped": base64.b64encode(
            wrap_key(attacker.public, bogus_previous, CHAIN_CONTEXT)
        ).decode(),
    }
    records = next(p for p in (env.root / "repo").rglob("records") if p.is_dir())
    (records / "recovery").mkdir(exist_ok=True)
    (records / "recovery" / "0001.json").write_text(json.dumps(record))
    attacker.save(env.root / "attacker.key")
    env.policy.write_text(env.policy.read_text().replace('kind = "keys"', 'kind = "files"'))
    proc = env.run(
        "restore",
        "platform-keys",
        "--target",
        str(env.root / "t"),
        "--recovery-key",
        str(env.root / "attacker.key"),
        check=False,
    )
    assert proc.returncode == 2 and "forged" in proc.stderr
    assert not (env.root / "t").exists()


def test_passphrase_protected_shares(env, tmp_path):
    env.run("backup", "platform-keys")
    (tmp_path / "alice.pass").write_text("correct horse battery\n")
    (tmp_path / "wrong.pass").write_text("not the passphrase\n")
    recovery = tmp_path / "recovery.key"
    # a recovery-key file to split again, this time with alice's share under a passphrase
    env.run(
        "keys",
        "rotate",
        "--recovery",
        *shares(env, "alice", "bob"),
        "--recovery-key-out",
        str(recovery),
    )
    resplit = env.run(
        "escrow",
        "split",
        "--recovery-key",
        str(recovery),
        "--out",
        str(tmp_path / "p"),
        "--custodian-passphrase",
        f"alice={tmp_path / 'alice.pass'}",
    )
    alice = tmp_path / "p" / "alice.share"
    # a recovery-key file cannot split the key-material escrow key: the operator is told
    assert "no share of the key-material escrow key" in resplit.stdout.replace("\n", " ")

    def body(path: Path) -> list[str]:
        return [w for line in path.read_text().splitlines() if not line.startswith("#") for w in line.split()]

    assert len(body(tmp_path / "p" / "bob.share")) >= 20  # bob's share: plain mnemonic words
    assert len(body(alice)) == 1  # alice's: one sealed blob, no words
    pair = ["--share", str(alice), "--share", str(tmp_path / "p" / "bob.share")]
    target = env.root / "t"
    missing = env.run("restore", "platform-keys", "--target", str(target), *pair, check=False)
    assert missing.returncode == 2 and "protected by a passphrase" in missing.stderr
    wrong = env.run(
        "restore",
        "platform-keys",
        "--target",
        str(target),
        *pair,
        "--passphrase-file",
        str(tmp_path / "wrong.pass"),
        check=False,
    )
    assert wrong.returncode == 2 and "wrong passphrase" in wrong.stderr
    env.run(
        "restore",
        "platform-keys",
        "--target",
        str(target),
        *pair,
        *shares(env, "alice", "bob"),  # the key-material escrow shares (not re-split)
        "--passphrase-file",
        str(tmp_path / "alice.pass"),
    )
    assert (target / "platform-keys" / "media-master.key").read_text() == f"master-secret={CANARY}\n"
    assert all("correct horse" not in t for t in env.outputs)
    assert "correct horse" not in (env.root / ".lifeboat" / "audit.jsonl").read_text()


def run_on_terminal(
    cli: LifeboatCli, args: list[str], answers: list[str], timeout: float = 120
) -> tuple[int, str]:
    """Run lifeboat with a pseudo-terminal as stdin/stdout, typing each answer when prompted.
    The program must end on its own: a run that has to be killed fails the test."""
    cmd, environment = cli.command(*args), cli.environment()
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execve(cmd[0], cmd, environment)
    output = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            output += data
            if output.rstrip().endswith(b":"):
                # answer the prompt; once the answers run out, end input (Ctrl-D)
                os.write(fd, pending.pop(0).encode() + b"\n" if pending else b"\x04")
                output += b"<typed>"
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError(f"{args} did not end within {timeout}s: {output.decode(errors='replace')}")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def mnemonic(env: KeysEnv, name: str, section: int = 0) -> str:
    """The custodian's recovery-key words (section 0) or key-material escrow words (1)."""
    lines = [line for line in (env.root / "shares" / f"{name}.share").read_text().splitlines()]
    sections: list[list[str]] = []
    for line in lines:
        if line.startswith("# lifeboat"):
            sections.append([])
        elif not line.startswith("#"):
            sections[-1].append(line)
    return " ".join(sections[section])


def typed(env: KeysEnv, name: str) -> list[str]:
    return [name, mnemonic(env, name), mnemonic(env, name, 1)]


def test_custodians_type_their_words_on_a_terminal(env):
    env.run("backup", "platform-keys")
    base = ["restore", "platform-keys", "--target"]
    answers = [*typed(env, "carol"), *typed(env, "alice")]
    code, out = run_on_terminal(env, [*base, str(env.root / "typed")], answers)
    assert code == 0, out
    assert (env.root / "typed" / "platform-keys" / "media-master.key").exists()
    assert mnemonic(env, "carol").split()[4] not in out  # hidden input is not echoed
    audit = [json.loads(line) for line in (env.root / ".lifeboat" / "audit.jsonl").read_text().splitlines()]
    assert {"alice", "carol"} <= {e["details"].get("custodian") for e in audit}
    # the same share typed twice does not count as two custodians
    twice = [*typed(env, "carol"), *typed(env, "carol")]
    code, out = run_on_terminal(env, [*base, str(env.root / "typed2")], twice)
    assert "share 3" in out  # the repeated share did not count: a third custodian is asked for
    assert code == 2 and not (env.root / "typed2" / "platform-keys").exists()


@pytest.mark.parametrize("spec", ["alice", "=x", "alice="])
def test_malformed_custodian_passphrase_is_refused_before_anything_is_written(tmp_path, spec):
    e = keys_env(tmp_path)
    proc = e.run("init", "--shares-out", str(tmp_path / "s"), "--custodian-passphrase", spec, check=False)
    assert proc.returncode == 2 and "NAME=FILE" in proc.stderr
    assert not (tmp_path / "repo").exists() and not (tmp_path / "keys").exists()
