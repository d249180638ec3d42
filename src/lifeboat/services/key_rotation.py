"""Rotating the repository-wide keys the recovery side holds: the drill signing key
(`keys rotate --drill`) and the key-material escrow key (`keys rotate --escrow`). Writer
keys and the recovery key rotate in services/keys.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lifeboat.crypto.credentials import Credentials
from lifeboat.errors import KeyError_
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
