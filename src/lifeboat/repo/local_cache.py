"""Authenticated local caches: what this host keeps of a repository in its state dir.

Snapshot headers, refs and index files are verified once and then cached (they are
immutable): readers choose the snapshot to restore, plan WAL and locate blobs from those
caches, and backups skip extending Object Lock on packs whose cached retain-until date
suffices. The state dir is not the key file, so each cache file carries a keyed BLAKE3 tag
under a key derived from the repository's MAC key, which every key file and the recovery
side hold. Somebody who may rewrite the state dir but holds no key cannot make a reader
restore another snapshot's tree as "latest", or report stale backups as fresh: a file whose
tag fails is ignored and rebuilt from the repository, as an unreadable one always was.

Stored form: ``data ‖ BLAKE3-keyed(lp(name) ‖ data)`` (32 bytes); ``name`` says which cache
file it is, so one cache file copied over another fails too. A cache that may hold a secret
(the policy slice `status` keeps: a dsn may carry its password) is encrypted as well
(``encrypt``): an AEAD envelope (crypto/envelope.py) under a key derived in a context of its
own, ``name`` its associated data.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable

import blake3

TAG_SIZE = 32
CACHE_KEY_CONTEXT = b"lifeboat/local-cache/v1"
CACHE_SECRET_CONTEXT = b"lifeboat/local-cache-secret/v1"


class CacheSeal:
    """Tags cache files with a key only key holders can derive."""

    def __init__(self, mac: Callable[[bytes], bytes]) -> None:
        self._key = mac(CACHE_KEY_CONTEXT)
        self._secret_key = mac(CACHE_SECRET_CONTEXT)

    def tagger(self, name: str) -> blake3.blake3:
        """The tag of cache file ``name`` in the making: ``update`` it with the data piece by
        piece (a file too large to hold twice), then ``digest``."""
        label = name.encode()
        return blake3.blake3(struct.pack(">I", len(label)) + label, key=self._key)

    def _tag(self, name: str, data: bytes) -> bytes:
        hasher = self.tagger(name)
        hasher.update(data)
        return hasher.digest()

    def seal(self, name: str, data: bytes) -> bytes:
        """``data`` as written to the cache file ``name``."""
        return data + self._tag(name, data)

    def open(self, name: str, stored: bytes) -> bytes | None:
        """The data of a cache file whose tag holds (None: rewritten, damaged, or an older
        untagged cache)."""
        if len(stored) < TAG_SIZE:
            return None
        data, tag = stored[:-TAG_SIZE], stored[-TAG_SIZE:]
        return data if hmac.compare_digest(tag, self._tag(name, data)) else None

    def encrypt(self, name: str, data: bytes) -> bytes:
        """``data`` as written to the cache file ``name``, encrypted and authenticated."""
        from lifeboat.crypto.envelope import Cipher

        return Cipher(self._secret_key).seal(data, name.encode())

    def decrypt(self, name: str, stored: bytes) -> bytes | None:
        """The data of an encrypted cache file (None: rewritten, damaged, another file's or
        another key's)."""
        from lifeboat.crypto.envelope import Cipher
        from lifeboat.errors import IntegrityError

        try:
            return Cipher(self._secret_key).open(stored, name.encode())
        except IntegrityError:
            return None
