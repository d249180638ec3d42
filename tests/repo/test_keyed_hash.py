"""The keyed BLAKE3 that keeps the interpreter lock for small inputs (keyring.keyed_blake3):
fed in pieces, it must give exactly the digest of the whole input, or every MAC and
fingerprint a repository holds would stop matching (pure logic: the hash alone)."""

from __future__ import annotations

import os

import blake3
import pytest

from lifeboat.repo.keyring import GIL_FREE_FROM, HELD_BELOW, keyed_blake3

KEY = bytes(range(32))
PINNED = "6aef263cb53fbb5f9a19b75f1f415ac8029414ea61264216ec011804ecc0873f"
EDGES = [GIL_FREE_FROM - 1, GIL_FREE_FROM, GIL_FREE_FROM + 1, 2 * GIL_FREE_FROM - 2, 2 * GIL_FREE_FROM - 1]


@pytest.mark.parametrize(
    "size",
    [0, 1, *EDGES, 2 * GIL_FREE_FROM, 4096, HELD_BELOW - 1, HELD_BELOW, HELD_BELOW + 1, 1 << 20],
)
def test_the_digest_is_the_whole_inputs_at_every_size(size: int):
    data = os.urandom(size)
    assert keyed_blake3(data, KEY).digest() == blake3.blake3(data, key=KEY).digest()


def test_a_digest_made_before_pieces_still_matches():
    """Pinned from plain keyed BLAKE3 (5,000 bytes: held in pieces now)."""
    data = b"abcd" * 1250
    assert keyed_blake3(data, KEY).hexdigest() == PINNED


def test_a_longer_digest_reads_on_as_before():
    data = os.urandom(3000)
    assert keyed_blake3(data, KEY).digest(length=64) == blake3.blake3(data, key=KEY).digest(length=64)
