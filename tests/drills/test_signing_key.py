"""The drill signing key in the repository: published once, opened by every recovery key of
the chain (a rotated recovery key included), refused when its record was altered, and the
root key's public half read from a format-2 config when one carries it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from lifeboat.crypto.keys import RecoveryKey
from lifeboat.crypto.writers import RootKey
from lifeboat.drills.signing_key import config_root_public, lookup, publish, signer
from lifeboat.repo import Repository
from lifeboat.repo.recovery_chain import link_recovery_key, resolve_chain
from lifeboat.storage import open_storage


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Repository, RecoveryKey, str]:
    created, _backup, recovery = Repository.create(open_storage(f"file://{tmp_path}/repo"))
    _key, fp = publish(created, RootKey.from_chain(created.id, [recovery]))
    return created, recovery, fp


def test_a_rotated_recovery_key_opens_the_same_drill_key(repo: tuple[Repository, RecoveryKey, str]) -> None:
    created, first, fp = repo
    newer = RecoveryKey.generate(created.id)
    link_recovery_key(created, first, newer)
    chain = resolve_chain(created, newer)
    opened = signer(created, chain, created.id)
    assert opened.fingerprint == fp and not opened.issued and opened.refused == ()
    # the root (derived from the first key of the chain) did not change with the rotation
    assert RootKey.from_chain(created.id, chain).public == RootKey.from_chain(created.id, [first]).public


def test_an_altered_record_is_refused_and_a_new_key_issued(
    repo: tuple[Repository, RecoveryKey, str], tmp_path: Path
) -> None:
    created, recovery, fp = repo
    [record] = (tmp_path / "repo" / "records" / "drill-keys").iterdir()
    data = json.loads(record.read_text())
    data["created"] = "2000-01-01T00:00:00+00:00"  # any change to a signed field
    record.write_text(json.dumps(data))
    opened = signer(created, [recovery], created.id)
    assert opened.issued and opened.fingerprint != fp
    assert len(opened.refused) == 1 and opened.refused[0].startswith(f"records/drill-keys/{record.name}: ")
    assert "does not match its root signature" in opened.refused[0]


def test_the_root_public_key_of_a_format_2_config_is_used() -> None:
    root = RootKey.derive("r" * 32, b"\x01" * 32, b"\x02" * 32)
    assert config_root_public({"root_public": base64.b64encode(root.public).decode()}) == root.public
    assert config_root_public({"root_public": root.public.hex()}) == root.public
    assert config_root_public({}) is None and config_root_public({"root_public": "not base64!"}) is None


def test_lookup_without_any_record_finds_none(tmp_path: Path) -> None:
    created, _backup, recovery = Repository.create(open_storage(f"file://{tmp_path}/repo"))
    found = lookup(created, RootKey.from_chain(created.id, [recovery]).public, created.id)
    assert found.published is None and found.refused == []
