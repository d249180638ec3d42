"""The repository's keys in use by one process: ids, MACs, data-key wrapping."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Sequence

import blake3

from lifeboat.crypto.envelope import Cipher, unwrap_key, wrap_key
from lifeboat.crypto.keys import BackupKey, RecoveryKey
from lifeboat.errors import IntegrityError, KeyError_

PACK_KEY_CONTEXT = b"pack"


class Keyring:
    """Derived keys for one repository. Without a recovery key it can write but not read."""

    def __init__(
        self,
        repo_id: str,
        id_key: bytes,
        recipient_public: bytes,
        recovery: RecoveryKey | None,
        older: Sequence[RecoveryKey] = (),
    ) -> None:
        self.repo_id = repo_id
        self.recipient_public = recipient_public
        self.recovery = recovery
        # Recovery keys retired by rotation, reached through the chain: they open older packs.
        self._readers = [recovery, *older] if recovery is not None else []
        self._id_key = id_key
        self._mac_key = hmac.new(id_key, b"lifeboat/mac/v1", hashlib.sha256).digest()
        self._deks: dict[bytes, Cipher] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_backup(cls, key: BackupKey) -> Keyring:
        return cls(key.repo_id, key.id_key, key.recovery_public, None)

    @property
    def can_read(self) -> bool:
        return self.recovery is not None

    def blob_id(self, data: bytes) -> str:
        """Content id: keyed BLAKE3, so ids reveal nothing about the plaintext."""
        return blake3.blake3(data, key=self._id_key, max_threads=1).hexdigest()

    def digest(self) -> blake3.blake3:
        return blake3.blake3(key=self._id_key)

    def mac(self, data: bytes) -> bytes:
        return blake3.blake3(data, key=self._mac_key).digest()

    def new_pack_cipher(self) -> tuple[Cipher, bytes]:
        dek = os.urandom(32)
        return Cipher(dek), wrap_key(self.recipient_public, dek, PACK_KEY_CONTEXT)

    def pack_cipher(self, wrapped: bytes) -> Cipher:
        if self.recovery is None:
            raise KeyError_(
                "reading data needs the recovery key",
                hint="pass --recovery-key FILE or --share FILE (M of N custodians)",
            )
        with self._lock:
            cipher = self._deks.get(wrapped)
        if cipher is None:
            cipher = Cipher(self._unwrap_with_any(wrapped))
            with self._lock:
                self._deks[wrapped] = cipher
        return cipher

    def _unwrap_with_any(self, wrapped: bytes) -> bytes:
        for key in self._readers[:-1]:
            try:
                return unwrap_key(key.private, wrapped, PACK_KEY_CONTEXT)
            except IntegrityError:
                continue
        try:
            return unwrap_key(self._readers[-1].private, wrapped, PACK_KEY_CONTEXT)
        except IntegrityError:
            raise IntegrityError(
                "cannot open a pack's data key: the pack was modified, or it was written after "
                "'keys rotate --recovery' and needs the newer recovery key"
            ) from None
