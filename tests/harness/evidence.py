"""What a forger of drill evidence does (the attack tests' adversaries): rewrite a bundle's
SHA256SUMS over its files as they now are and sign it with a key of their own, and plant
drill-key records for that key with a backup key and the storage credentials."""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifeboat import runtime
from lifeboat.assets.registry import load_policy
from lifeboat.crypto.pinning import fingerprint, sign_bundle
from lifeboat.crypto.signed import ObjectType, sign_by_root
from lifeboat.crypto.writers import RootKey, canonical_json
from lifeboat.drills.signing_key import record_body
from tests.harness.cli import LifeboatCli
from tests.harness.policy import PolicyBuilder


def resign(bundle: Path, key: Ed25519PrivateKey) -> None:
    """Recompute SHA256SUMS over the bundle as it now is and sign it with ``key``."""
    names = sorted(
        str(p.relative_to(bundle))
        for p in bundle.rglob("*")
        if p.is_file() and p.name not in ("SHA256SUMS", "SHA256SUMS.sig", "drill-key.pub")
    )
    sums = "".join(f"{hashlib.sha256((bundle / n).read_bytes()).hexdigest()}  {n}\n" for n in names)
    (bundle / "SHA256SUMS").write_text(sums)
    (bundle / "SHA256SUMS.sig").write_text(base64.b64encode(sign_bundle(key, sums.encode())).decode() + "\n")


def plant_drill_key(policy_path: Path) -> tuple[list[str], Ed25519PrivateKey]:
    """A compromised backup host's best drill-key records: its own signing key sealed to the
    repository's (public) recovery key, 'root-signed' by a root it made up, plus a legacy
    unsigned `drill-key.json`. Written with its backup key through lifeboat's own API; returns
    the records' names and the key."""
    policy = load_policy(policy_path)
    repo = runtime.open_for_write(policy)
    try:
        assert repo.keyring.recovery is None  # a backup key: no recovery key, no root key
        config = repo.config
        fake_root = RootKey.derive(
            repo.id, secrets.token_bytes(32), base64.b64decode(config["recovery_public"])
        )
        mine = Ed25519PrivateKey.generate()
        fp = fingerprint(mine.public_key())
        body = {
            **record_body(repo.id, mine, fake_root.recovery_public),
            "created": "2099-01-01T00:00:00+00:00",
        }
        name = f"drill-keys/{fp.removeprefix('sha256:')}.json"
        signature = sign_by_root(fake_root, ObjectType.RECORD, name, canonical_json(body)).to_bytes()
        repo.put_record(name, {**body, "root_signature": base64.b64encode(signature).decode()})
        repo.put_record("drill-key.json", {"public_key": mine.public_key().public_bytes_raw().hex()})
    finally:
        repo.close()
    return [name, "drill-key.json"], mine


def drilled_site(root: Path, drill: str = "outage", **targets: Any) -> LifeboatCli:
    """A policy written under ``root``: a files asset `conf` (``root/etc``) of class `gold`
    (``targets``: rpo, rto, drill_every... over 1d / 1h), a full-outage drill ``drill`` with
    its evidence in ``root/evidence``, the recovery key to be made at ``root/keys``. Not
    initialised: the runner for it."""
    (root / "keys").mkdir()
    (root / "etc").mkdir()
    (root / "etc" / "app.conf").write_text("port = 1\n")
    (
        PolicyBuilder()
        .repository(f"file://{root}/repo", recovery_key="keys/recovery.key")
        .data_class("gold", **{"rpo": "1d", "rto": "1h", "retention": {"last": 5}, **targets})
        .files("conf", [root / "etc"], cls="gold")
        .drill(drill, "full-outage", ["conf"], evidence_dir=root / "evidence")
        .write(root / "lifeboat.toml")
    )
    return LifeboatCli(root / "lifeboat.toml", cwd=root)
