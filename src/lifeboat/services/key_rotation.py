"""Rotating the repository-wide keys the recovery side holds: the drill signing key
(`keys rotate --drill`) and the key-material escrow key (`keys rotate --escrow`). Writer
keys and the recovery key rotate in services/keys.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lifeboat.crypto.credentials import Credentials
from lifeboat.errors import ConfigError, KeyError_
from lifeboat.policy import Policy
from lifeboat.services.keys import Audited
from lifeboat.services.session import reading

if TYPE_CHECKING:
    from lifeboat.drills.signing_key import DrillKeyRotation


def rotate_drill_key(policy: Policy, creds: Credentials) -> DrillKeyRotation:
    """`lifeboat keys rotate --drill`: a new drill signing key, sealed to the recovery key and
    published in a new root-signed record that replaces the old one (recovery side)."""
    from lifeboat.drills.signing_key import rotate as rotate_drill
    from lifeboat.repo.recovery_chain import resolve_chain

    with (
        reading(policy, creds, purpose="keys rotate --drill") as session,
        Audited(session, "keys-rotate-drill"),
    ):
        repo = session.repo
        recovery = repo.keyring.recovery
        if recovery is None:  # pragma: no cover - a reading session holds it
            raise KeyError_("rotating the drill key needs the recovery key")
        rotation = rotate_drill(repo, resolve_chain(repo, recovery), repo.id)
        session.record(
            "keys-rotate-drill",
            old_fingerprint=rotation.old_fingerprint,
            new_fingerprint=rotation.new_fingerprint,
            refused_records=len(rotation.refused),
        )
    return rotation


@dataclass
class EscrowRotation:
    """What `keys rotate --escrow` did: the escrow key replaced, the new one and its shares."""

    old_fingerprint: str
    new_fingerprint: str
    threshold: int
    custodians: list[str]
    shares_dir: Path
    shares: list[Path] = field(default_factory=list)


def rotate_escrow_key(
    policy: Policy,
    creds: Credentials,
    shares_out: Path,
    threshold: int | None = None,
    custodians: list[str] | None = None,
    passphrases: dict[str, bytes] | None = None,
) -> EscrowRotation:
    """`lifeboat keys rotate --escrow --shares-out DIR`: a new key-material escrow key split
    among ``custodians`` (a departed custodian left out), published in a root-signed record
    that replaces the old one. Key material backed up from now on is sealed to the new key
    only, so M shares of the old key open nothing written afterwards; what was sealed before
    stays sealed to the old key (packs are immutable, re-sealing them is not built): back
    up the keys assets again at once, and prune their old snapshots when retention allows.
    Each new share file also holds a fresh share of the (unchanged) recovery key."""
    from lifeboat.crypto.escrow import split_recovery_key
    from lifeboat.crypto.escrow_key import generate_escrow
    from lifeboat.repo.escrow import current_escrow, put_escrow_rotation
    from lifeboat.repo.recovery_chain import current_fingerprint

    with (
        reading(policy, creds, purpose="keys rotate --escrow") as session,
        Audited(session, "keys-rotate-escrow"),
    ):
        repo = session.repo
        old = current_escrow(repo.config, repo)
        if old is None:
            raise ConfigError(
                "this repository has no key-material escrow key to rotate",
                hint="only repositories made by 'lifeboat init' with a keys asset have one",
            )
        recovery = repo.keyring.recovery
        if recovery is None or recovery.fingerprint() != current_fingerprint(repo):
            raise KeyError_(
                "rotating the escrow key needs the newest recovery key",
                hint="use the key or shares from the last 'keys rotate --recovery'",
            )
        people = custodians or list(policy.escrow.custodians)
        m = threshold or policy.escrow_threshold()
        new, mnemonics = generate_escrow(repo.id, m, people)
        written = split_recovery_key(
            policy, repo, recovery, shares_out, m, people, passphrases or {}, key_material=mnemonics
        )
        try:
            put_escrow_rotation(repo, repo.root_key(), new, old)
        except BaseException:
            for path in written:  # shares of an escrow key the repository never published
                path.unlink(missing_ok=True)
            raise
        session.record(
            "keys-rotate-escrow",
            old_fingerprint=old.fingerprint,
            new_fingerprint=new.fingerprint,
            threshold=m,
            custodian_names=people,
        )
    return EscrowRotation(old.fingerprint, new.fingerprint, m, people, shares_out, written)
