"""Keys for the crypto unit tests: real keys, generated fresh for every test."""

from __future__ import annotations

import pytest

from lifeboat.crypto.keys import RecoveryKey
from lifeboat.crypto.writers import RootKey

REPO_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def recovery() -> RecoveryKey:
    return RecoveryKey.generate(REPO_ID)


@pytest.fixture
def root(recovery: RecoveryKey) -> RootKey:
    return RootKey.derive(REPO_ID, recovery.secret, recovery.public)
