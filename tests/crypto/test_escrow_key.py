"""Key material encrypted to an escrow key that only M custodians together can use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lifeboat.crypto.envelope import unwrap_key
from lifeboat.crypto.escrow import ParsedShare, parse_mnemonic, split
from lifeboat.crypto.escrow_key import (
    EscrowPublic,
    decrypt_with_shares,
    encrypt_to_escrow,
    generate_escrow,
)
from lifeboat.crypto.keys import RecoveryKey
from lifeboat.errors import IntegrityError, KeyError_
from tests.crypto.conftest import REPO_ID

SECRET = b"-----BEGIN PRIVATE KEY----- the TLS key of the payment gateway"
CONTEXT = b"snapshots/abc:tls/gateway.key"
CUSTODIANS = ["alice", "bob", "carol"]


@pytest.fixture
def escrow() -> tuple[EscrowPublic, dict[str, str]]:
    return generate_escrow(REPO_ID, 2, CUSTODIANS)


def _shares(mnemonics: dict[str, str], *names: str) -> list[ParsedShare]:
    return [parse_mnemonic(mnemonics[n], n, f"{n}.share") for n in names]


def test_m_shares_decrypt(escrow: tuple[EscrowPublic, dict[str, str]]) -> None:
    public, mnemonics = escrow
    sealed = encrypt_to_escrow(public, SECRET, CONTEXT)
    assert SECRET not in sealed
    for pair in (("alice", "bob"), ("bob", "carol"), ("carol", "alice")):
        assert decrypt_with_shares(public, _shares(mnemonics, *pair), sealed, CONTEXT) == SECRET
    assert decrypt_with_shares(public, _shares(mnemonics, *CUSTODIANS), sealed, CONTEXT) == SECRET


def test_m_minus_one_shares_are_refused(escrow: tuple[EscrowPublic, dict[str, str]]) -> None:
    public, mnemonics = escrow
    sealed = encrypt_to_escrow(public, SECRET, CONTEXT)
    with pytest.raises(KeyError_, match="1 custodian share\\(s\\) given, 2 needed"):
        decrypt_with_shares(public, _shares(mnemonics, "alice"), sealed, CONTEXT)
    # the same share twice is still one custodian
    twice = _shares(mnemonics, "alice") * 2
    with pytest.raises(KeyError_, match="1 custodian share\\(s\\) given"):
        decrypt_with_shares(public, twice, sealed, CONTEXT)


def test_the_recovery_key_and_its_shares_cannot_open_key_material(
    escrow: tuple[EscrowPublic, dict[str, str]],
) -> None:
    public, _ = escrow
    sealed = encrypt_to_escrow(public, SECRET, CONTEXT)
    recovery = RecoveryKey.generate(REPO_ID)
    wrapped_len = int.from_bytes(sealed[5:7], "big")
    with pytest.raises(IntegrityError):
        unwrap_key(recovery.private, sealed[7 : 7 + wrapped_len], b"escrow/" + CONTEXT)
    _, recovery_shares = split(recovery, 2, CUSTODIANS)
    with pytest.raises(KeyError_, match="does not belong to this escrow key"):
        decrypt_with_shares(public, _shares(recovery_shares, "alice", "bob"), sealed, CONTEXT)


def test_generation_returns_no_private_key(escrow: tuple[EscrowPublic, dict[str, str]]) -> None:
    public, mnemonics = escrow
    record = json.dumps(public.to_json())
    assert set(mnemonics) == set(CUSTODIANS)
    assert set(json.loads(record)) == {
        "repo_id",
        "public",
        "fingerprint",
        "identifier",
        "threshold",
        "custodians",
        "created",
    }
    assert EscrowPublic.from_json(json.loads(record)) == public


def test_context_is_authenticated(escrow: tuple[EscrowPublic, dict[str, str]]) -> None:
    public, mnemonics = escrow
    sealed = encrypt_to_escrow(public, SECRET, CONTEXT)
    with pytest.raises(IntegrityError):
        decrypt_with_shares(public, _shares(mnemonics, "alice", "bob"), sealed, b"snapshots/other:x")


def test_shares_of_a_look_alike_escrow_record_are_refused(
    escrow: tuple[EscrowPublic, dict[str, str]],
) -> None:
    public, mnemonics = escrow
    other, _ = generate_escrow(REPO_ID, 2, CUSTODIANS)
    # a forged record claiming the real escrow's identifier but another public key
    forged = EscrowPublic(REPO_ID, other.public, public.identifier, 2, public.custodians, public.created)
    with pytest.raises(KeyError_, match="recombine to another key"):
        decrypt_with_shares(forged, _shares(mnemonics, "alice", "bob"), b"", CONTEXT)


def test_impossible_splits_are_refused() -> None:
    with pytest.raises(KeyError_, match="1-of-3"):
        generate_escrow(REPO_ID, 1, CUSTODIANS)
    with pytest.raises(KeyError_, match="cannot split"):
        generate_escrow(REPO_ID, 4, CUSTODIANS)


def test_share_file_carries_both_shares_under_one_passphrase(
    tmp_path: Path, escrow: tuple[EscrowPublic, dict[str, str]]
) -> None:
    """One file per custodian: the recovery-key share, then the key-material share, both
    sealed under the custodian's passphrase; reading it gives both, each with its purpose."""
    from lifeboat.crypto.escrow import KEY_MATERIAL, RECOVERY, read_share_file, write_shares

    _, mnemonics = escrow
    _, recovery_shares = split(RecoveryKey.generate(REPO_ID), 2, CUSTODIANS)
    written = write_shares(tmp_path, recovery_shares, {"alice": b"pass phrase"}, key_material=mnemonics)
    text = (tmp_path / "alice.share").read_text()
    assert mnemonics["alice"].split()[4] not in text  # sealed, not in clear
    alice = read_share_file(written[0], [b"pass phrase"])
    bob = read_share_file(written[1])
    assert [s.purpose for s in alice] == [RECOVERY, KEY_MATERIAL] == [s.purpose for s in bob]
    assert alice[1].mnemonic == mnemonics["alice"] and bob[0].mnemonic == recovery_shares["bob"]
    with pytest.raises(KeyError_, match="protected by a passphrase"):
        read_share_file(written[0])


def test_reshare_keeps_the_key_and_identifier_and_old_new_mixes_fail(
    escrow: tuple[EscrowPublic, dict[str, str]],
) -> None:
    from lifeboat.crypto.escrow_key import open_escrow

    public, mnemonics = escrow
    sealed = encrypt_to_escrow(public, SECRET, CONTEXT)
    fresh = open_escrow(public, _shares(mnemonics, "alice", "bob")).reshare()
    assert set(fresh) == set(CUSTODIANS) and fresh["carol"] != mnemonics["carol"]
    assert decrypt_with_shares(public, _shares(fresh, "bob", "carol"), sealed, CONTEXT) == SECRET
    mixed = [*_shares(mnemonics, "alice"), *_shares(fresh, "carol")]
    with pytest.raises(KeyError_):
        decrypt_with_shares(public, mixed, sealed, CONTEXT)
    assert "mnemonic" not in repr(open_escrow(public, _shares(fresh, "alice", "carol")))
