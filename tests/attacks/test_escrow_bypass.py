"""Escrow enforced by cryptography (issue #14): key material (`kind = "keys"`) is sealed to
an escrow key that exists only as custodians' SLIP-39 shares, so each adversary below fails
with only what it has, whatever the policy says:

* the recovery-key holder, with a copy of the policy calling the asset `kind = "files"`;
* the recovery-key holder plus one custodian (M-1 shares of the escrow key);
* custodians bringing their recovery-key shares as if they were key-material shares;
* the storage provider, grepping the stored bytes for a key file's content.

Each refusal is one line, nothing lands in the target, and no secret is ever printed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import Clock, LifeboatCli, PolicyBuilder
from tests.keys.test_keys import CANARY, keys_policy, make_key_material

ASSET = "platform-keys"


@dataclass
class EscrowEnv(LifeboatCli):
    """A production policy with one keys asset; init wrote a recovery-key file *and* the
    custodians' 2-of-3 share files (the recovery-key holder is a separate person)."""

    root: Path = field(default=Path("."))

    @property
    def recovery_key(self) -> Path:
        return self.root / "recovery.key"

    def share(self, name: str) -> Path:
        return self.root / "shares" / f"{name}.share"

    def files_policy(self) -> Path:
        """The adversary's copy of the policy: the same repository and keys, the asset now
        `kind = "files"` (no escrow threshold asked for by any CLI rule)."""
        return (
            PolicyBuilder(mode="production")
            .repository(f"file://{self.root}/repo")
            .data_class("critical", rpo="1h", rto="30m")
            .files(ASSET, [self.root / ASSET], cls="critical")
            .table("escrow", threshold=2, custodians=["alice", "bob", "carol"])
            .write(self.root / "edited.toml")
        )

    def restore_files(self, target: Path, *creds: str) -> tuple[int, str]:
        edited = LifeboatCli(self.files_policy(), clock=self.clock, timeout=120)
        proc = edited.run("restore", ASSET, "--target", str(target), *creds, check=False)
        self.outputs.extend(edited.outputs)
        return proc.returncode, proc.stderr


@pytest.fixture
def env(tmp_path: Path, clock: Clock) -> EscrowEnv:
    make_key_material(tmp_path / ASSET)
    policy = keys_policy(tmp_path).write(tmp_path / "lifeboat.toml")
    e = EscrowEnv(policy, clock=clock, timeout=120, root=tmp_path)
    e.run("init", "--recovery-key-out", str(e.recovery_key), "--shares-out", str(tmp_path / "shares"))
    e.run("backup", ASSET)
    return e


def sections(path: Path) -> list[str]:
    """The mnemonic of each section of a share file (recovery key, then key material)."""
    out: list[list[str]] = []
    for line in path.read_text().splitlines():
        if line.startswith("# lifeboat"):
            out.append([])
        elif not line.startswith("#"):
            out[-1].append(line)
    return [" ".join(words) for words in out]


def untouched(target: Path) -> bool:
    return not target.exists() or not any(target.iterdir())


def no_secrets(env: EscrowEnv) -> None:
    words = [
        w for name in ("alice", "bob", "carol") for m in sections(env.share(name)) for w in m.split()[3:6]
    ]
    texts = [*env.outputs, (env.root / ".lifeboat" / "audit.jsonl").read_text()]
    assert all(CANARY not in t for t in texts)
    assert all(" ".join(words[i : i + 3]) not in t for t in texts for i in range(0, len(words), 3))


def test_recovery_key_file_with_a_policy_calling_it_files_is_refused(env):
    target = env.root / "stolen"
    code, stderr = env.restore_files(target, "--recovery-key", str(env.recovery_key))
    assert code == 2, stderr
    assert stderr.startswith("lifeboat: error: ") and "escrow shares" in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) <= 2  # error + hint
    assert untouched(target)
    # the kind the policy names is not what guards it: the kind that says "keys" refuses too
    proc = env.run(
        "restore", ASSET, "--target", str(target), "--recovery-key", str(env.recovery_key), check=False
    )
    assert proc.returncode == 2 and untouched(target)
    no_secrets(env)


def test_the_recovery_key_opens_no_byte_of_key_material(env):
    """Below the CLI: with the recovery key every chunk of the repository is tried, and none
    of the key material's chunks opens (the data itself, not a rule, refuses)."""
    from lifeboat.crypto.keys import load_recovery_key
    from lifeboat.errors import KeyError_
    from lifeboat.repo import Repository
    from lifeboat.storage import open_storage

    repo = Repository.open(
        open_storage(f"file://{env.root}/repo"), recovery_key=load_recovery_key(env.recovery_key)
    )
    opened, refused = [], 0
    for blob_id in repo.index().blob_ids():
        try:
            opened.append(repo.read_blob(blob_id))
        except KeyError_ as exc:
            assert "escrow shares" in exc.message
            refused += 1
    assert refused >= 7  # six key files and the tree: all sealed to the escrow key
    assert all(CANARY.encode() not in data for data in opened)


def test_recovery_key_with_one_custodian_is_refused(env):
    from lifeboat.crypto.escrow import read_share_file
    from lifeboat.crypto.keys import load_recovery_key
    from lifeboat.errors import KeyError_
    from lifeboat.repo import Repository
    from lifeboat.repo.escrow import unlock_escrow
    from lifeboat.storage import open_storage

    target = env.root / "stolen"
    code, stderr = env.restore_files(target, "--share", str(env.share("alice")))
    assert code == 2 and "needed" in stderr and untouched(target)
    # the recovery key and alice's key-material share together: one of the two needed
    repo = Repository.open(
        open_storage(f"file://{env.root}/repo"), recovery_key=load_recovery_key(env.recovery_key)
    )
    alice = [s for s in read_share_file(env.share("alice")) if s.purpose == "key-material"]
    with pytest.raises(KeyError_, match="1 custodian share"):
        unlock_escrow(repo.config, repo.keyring, alice)
    snap = repo.snapshots(ASSET)[-1]
    with pytest.raises(KeyError_, match="escrow shares"):
        repo.reader(snap).entries()
    no_secrets(env)


def test_recovery_key_shares_passed_off_as_key_material_shares_are_refused(env):
    """Two custodians copy their recovery-key words into the key-material section: a valid
    quorum of *a* split, but not of the escrow key's."""
    forged = []
    for name in ("alice", "bob"):
        recovery_words = sections(env.share(name))[0]
        path = env.root / f"forged-{name}.share"
        path.write_text(
            f"# lifeboat recovery-key share (SLIP-39). Keep offline. Custodian: {name}\n{recovery_words}\n"
            f"# lifeboat key-material escrow share (SLIP-39). Keep offline. Custodian: {name}\n"
            f"{recovery_words}\n"
        )
        forged += ["--share", str(path)]
    target = env.root / "stolen"
    proc = env.run("restore", ASSET, "--target", str(target), *forged, check=False)
    assert proc.returncode == 2 and "does not belong to this escrow key" in proc.stderr
    assert untouched(target)
    code, stderr = env.restore_files(target, *forged)
    assert code == 2 and "escrow" in stderr and untouched(target)
    no_secrets(env)


def test_two_custodians_restore_and_the_storage_holds_no_key_content(env):
    """The genuine path still works (2 share files), and the storage provider's bytes hold
    neither the canary nor any key file's content."""
    target = env.root / "restored"
    out = json.loads(
        env.run(
            "restore",
            ASSET,
            "--target",
            str(target),
            "--json",
            "--share",
            str(env.share("carol")),
            "--share",
            str(env.share("alice")),
        ).stdout
    )
    assert out["ok"] and all(k["match"] for k in out["keys"])
    assert (target / ASSET / "media-master.key").read_text() == f"master-secret={CANARY}\n"
    stored = b"".join(p.read_bytes() for p in (env.root / "repo").rglob("*") if p.is_file())
    assert CANARY.encode() not in stored
    for key_file in (env.root / ASSET).rglob("*"):
        if key_file.is_file():
            body = key_file.read_bytes()
            middle = body[len(body) // 2 - 8 : len(body) // 2 + 8]  # inside the key, past any header
            assert len(middle) == 16 and middle not in stored
    audit = [json.loads(line) for line in (env.root / ".lifeboat" / "audit.jsonl").read_text().splitlines()]
    opened_by = {
        e["details"].get("custodian") for e in audit if e["details"].get("key") == "key-material escrow"
    }
    assert opened_by == {"alice", "carol"}
    no_secrets(env)


def test_an_escrow_key_swapped_in_config_is_reported_by_check(env):
    """A storage-level attacker puts its own escrow key into `config`, so that key material
    backed up from then on is sealed to a key it holds: `check` with the recovery key
    compares config with the root-signed record and names the swap."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from lifeboat.crypto.envelope import public_bytes

    rk = ["--recovery-key", str(env.recovery_key)]
    clean = json.loads(env.run("check", "--json", *rk).stdout)
    assert clean["problems"] == []
    config_path = env.root / "repo" / "config"
    config = json.loads(config_path.read_text())
    config["escrow_key"]["public"] = base64.b64encode(public_bytes(X25519PrivateKey.generate())).decode()
    del config["escrow_key"]["fingerprint"]
    config_path.write_text(json.dumps(config, indent=2))
    proc = env.run("check", "--json", *rk, check=False)
    assert proc.returncode == 1
    problems = json.loads(proc.stdout)["problems"]
    assert [p["kind"] for p in problems] == ["escrow-key"] and "root key signed" in problems[0]["message"]
