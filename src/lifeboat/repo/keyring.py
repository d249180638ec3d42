"""The repository's keys in use by one process: ids, MACs, data-key wrapping.

Chunk ids are keyed BLAKE3 under the **writer's own** chunk-id key (issue #14): the same bytes
get unrelated ids from two writers, so dedup stays within one writer's data and a host can
only probe content it already has. Blobs written before writers had their own key (and by
a legacy key file) carry ids under the repository-wide ``id_key``. An id does not record
its key: a reader tries the keys it holds (the key that matched the pack's blobs before,
then the last key that matched anywhere, so only a pack's first blob may cost an extra hash
or a few) and the recovery side adds every writer's key, unwrapped from the registry
(``add_id_keys``, loaded when an id matches none of the keys held). Trying several keys
accepts nothing new: content passes only if its id under a key the reader holds is exactly
the id it is stored under (a second preimage of keyed BLAKE3 otherwise).

Two recipients for pack data keys (docs/design/repository-format.md, "Escrowed packs"):
the recovery key, and for key material (``kind = "keys"``) the escrow key, whose private
half exists only as custodians' SLIP-39 shares. An escrowed pack's wrapped key starts with
``ESCROW_PACK_TAG``; its blob ids are keyed with an id key of their own, so key material
never deduplicates into (or is found in) a recovery-key pack, nor the other way round.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import blake3

from lifeboat.crypto.envelope import Cipher, unwrap_key, wrap_key
from lifeboat.crypto.fingerprint import fingerprint_hash
from lifeboat.crypto.keys import BackupKey, RecoveryKey
from lifeboat.errors import IntegrityError, KeyError_

if TYPE_CHECKING:
    from lifeboat.crypto.escrow_key import EscrowOpener

PACK_KEY_CONTEXT = b"pack"
GIL_FREE_FROM = 2048  # blake3 (as hashlib) hands the interpreter lock back from this input size
HELD_BELOW = 16 << 10  # keyed_blake3 feeds a shorter input in pieces, keeping the lock
ESCROW_PACK_TAG = b"LBES"  # starts the wrapped data key of a pack sealed to the escrow key
ESCROW_BLOB_IDS = b"lifeboat/escrow-blob-ids/v1"


class EscrowRequired(KeyError_):
    """Reading key material needs the custodians' escrow shares; no key file opens it."""


def keyed_blake3(data: bytes, key: bytes) -> blake3.blake3:
    """A keyed BLAKE3 of ``data`` that keeps the interpreter lock for a small input
    (GIL_FREE_FROM to HELD_BELOW bytes): for MACs, which threads compute beside busy ones.

    A thread that hands the lock back while another one runs Python waits up to the
    interpreter's switch interval (5 ms) to get it back. Measured when a keys restore's reply
    threads fingerprinted every file the writer process made while the main thread decoded
    trees (as they do again; the writer process took them for a while): 30,000 files of
    0.5-4 KB restored in 1.43 s, 1.35 s with the lock kept (median of 6, into tmpfs). The
    input is fed in pieces each shorter than GIL_FREE_FROM, so the hash keeps the lock; it
    then takes 2-3 times as long (1 more µs at 2 KiB, 11 more at 16 KiB: it loses the SIMD
    run over many 1 KiB chunks), and from HELD_BELOW on, releasing the lock pays. Blob ids
    keep the plain hash: a restore's check of each small file's id gained from releasing it
    (`dir://` 3.03 s -> 3.21 s held)."""
    if not GIL_FREE_FROM <= len(data) < HELD_BELOW:
        return blake3.blake3(data, key=key, max_threads=1)
    hasher = blake3.blake3(key=key, max_threads=1)
    view = memoryview(data)
    for start in range(0, len(view), GIL_FREE_FROM - 1):
        hasher.update(view[start : start + GIL_FREE_FROM - 1])
    return hasher


class Keyring:
    """Derived keys for one repository. Without a recovery key it can write but not read."""

    def __init__(
        self,
        repo_id: str,
        id_key: bytes,
        recipient_public: bytes,
        recovery: RecoveryKey | None,
        older: Sequence[RecoveryKey] = (),
        chunk_id_key: bytes | None = None,
    ) -> None:
        self.repo_id = repo_id
        self.recipient_public = recipient_public
        self.recovery = recovery
        # Recovery keys retired by rotation, reached through the chain: they open older packs.
        self._readers = [recovery, *older] if recovery is not None else []
        self._id_key = id_key
        self._mac_key = hmac.new(id_key, b"lifeboat/mac/v1", hashlib.sha256).digest()
        # New blob ids: the writer's own key (a legacy key file has none: the repository's).
        self._chunk_key = chunk_id_key or id_key
        self._escrow_id_key = _escrow_ids(self._chunk_key)
        self._escrow_salt = b""
        # Every id key this process may meet when checking a blob (the repository's for old
        # blobs, the writer's own, and on the recovery side every writer's), in trial order.
        self._id_keys: list[bytes] = list(dict.fromkeys([self._chunk_key, id_key]))
        self._more_id_keys: Callable[[], list[bytes]] | None = None
        self._load_lock = threading.Lock()
        self._pack_key: dict[bytes, bytes] = {}  # pack header -> the id key its blobs matched
        self._deks: dict[bytes, Cipher] = {}
        self._escrow_keys: dict[tuple[bytes, bytes], tuple[bytes, ...]] = {}  # see _escrow_ids_of
        self._lock = threading.Lock()
        self.escrow_public: bytes | None = None  # set: this keyring writes escrowed packs
        self.escrow_threshold = 0
        self._escrow: EscrowOpener | None = None

    def for_escrow(self, public: bytes, threshold: int, id_salt: bytes = b"") -> Keyring:
        """A keyring writing packs sealed to the escrow key ``public`` (key material) with
        escrow blob ids; same repository MAC, so its index and snapshot read as usual.
        ``id_salt``: empty for the escrow key bound at ``init``, the key itself for one
        `keys rotate --escrow` made, so key material never dedups into packs sealed to a
        replaced escrow key (which the new shares could not open)."""
        ring = Keyring(
            self.repo_id, self._id_key, self.recipient_public, self.recovery, chunk_id_key=self._chunk_key
        )
        ring._readers = self._readers
        ring._id_keys, ring._more_id_keys = self._id_keys, self._more_id_keys
        ring._lock, ring._load_lock = self._lock, self._load_lock
        ring._escrow = self._escrow
        ring._escrow_id_key = _escrow_ids(self._chunk_key, id_salt)
        ring._escrow_salt = id_salt
        ring.escrow_public = public
        ring.escrow_threshold = threshold
        return ring

    def unlock_escrow(self, opener: EscrowOpener, threshold: int, id_salt: bytes = b"") -> None:
        """Lets this keyring read escrowed packs (the escrow key from M custodians' shares;
        ``id_salt`` as in ``for_escrow``)."""
        self._escrow = opener
        self._escrow_id_key = _escrow_ids(self._chunk_key, id_salt)
        self._escrow_salt = id_salt
        self.escrow_threshold = threshold

    @property
    def first_recovery(self) -> RecoveryKey | None:
        """The repository's first recovery key (end of the chain): the root key derives from it."""
        return self._readers[-1] if self._readers else None

    @property
    def escrow(self) -> EscrowOpener | None:
        """The escrow key opened from custodians' shares, if it was."""
        return self._escrow

    @property
    def escrow_unlocked(self) -> bool:
        """Whether escrowed packs (key material) can be read."""
        return self._escrow is not None

    @property
    def escrow_id_salt(self) -> bytes:
        """The salt of the escrow generation whose blob ids this keyring writes (empty for
        the escrow key bound at init)."""
        return self._escrow_salt

    @staticmethod
    def is_escrowed(wrapped: bytes) -> bool:
        """Whether a pack header's wrapped key is sealed to the escrow key."""
        return wrapped.startswith(ESCROW_PACK_TAG)

    def add_id_keys(self, keys: Sequence[bytes] | Callable[[], list[bytes]]) -> None:
        """More chunk-id keys to check blob ids with: other writers' (recovery side). A
        callable is called when an id matches none of the keys held, then tried again."""
        if callable(keys):
            self._more_id_keys = keys
            return
        with self._lock:
            self._id_keys[:] = list(dict.fromkeys([*self._id_keys, *keys]))

    def _load_more_id_keys(self) -> None:
        # Called on every miss, not once: a writer issued since the last call (the registry
        # was refreshed) is found too; a miss is rare (new pack of another writer, damage).
        with self._load_lock:
            if self._more_id_keys is not None:
                self.add_id_keys(self._more_id_keys())

    def blob_matches(self, wrapped: bytes, data: bytes, blob_id: str) -> bool:
        """Whether ``data`` has the id ``blob_id`` under one of the id keys this keyring
        holds (escrowed packs: the escrow ids derived from them). ``wrapped`` is the pack's
        header: the key that matched its last blob is tried first."""
        escrowed = self.is_escrowed(wrapped)
        first = self._pack_key.get(wrapped)
        if first is not None and self._id_matches(first, escrowed, data, blob_id):
            return True  # nearly every blob: a restore of small files checks one per file
        tried: set[bytes] = {first} if first is not None else set()
        for attempt in range(2):
            with self._lock:
                keys = list(dict.fromkeys([first, *self._id_keys] if first else self._id_keys))
            for key in keys:
                if key in tried:
                    continue
                tried.add(key)
                if self._id_matches(key, escrowed, data, blob_id):
                    if first != key:
                        with self._lock:
                            self._pack_key[wrapped] = key
                            # the next pack is most likely the same writer's: try its key first
                            if key in self._id_keys and self._id_keys[0] != key:
                                self._id_keys.remove(key)
                                self._id_keys.insert(0, key)
                    return True
            if attempt == 0:
                self._load_more_id_keys()
        return False

    def _id_matches(self, key: bytes, escrowed: bool, data: bytes, blob_id: str) -> bool:
        if not escrowed:
            return blake3.blake3(data, key=key, max_threads=1).hexdigest() == blob_id
        return any(
            blake3.blake3(data, key=escrow_key, max_threads=1).hexdigest() == blob_id
            for escrow_key in self._escrow_ids_of(key)
        )

    def _escrow_ids_of(self, key: bytes) -> tuple[bytes, ...]:
        """The id keys of key-material blobs written under ``key``: under the escrow
        generation's salt, then the empty one (the key bound at init). Derived once, not
        for every blob: a restore of key material checks one blob per file."""
        salt = self._escrow_salt
        derived = self._escrow_keys.get((key, salt))
        if derived is None:
            derived = tuple(_escrow_ids(key, s) for s in dict.fromkeys([salt, b""]))
            self._escrow_keys[(key, salt)] = derived  # the same value whichever thread wins
        return derived

    @classmethod
    def for_backup(cls, key: BackupKey) -> Keyring:
        """The keyring of a backup key: adds data (ids under the writer's own id key), cannot read it."""
        return cls(key.repo_id, key.id_key, key.recovery_public, None, chunk_id_key=key.chunk_id_key)

    @property
    def can_read(self) -> bool:
        """Whether this keyring holds the recovery key (reads data)."""
        return self.recovery is not None

    def blob_id(self, data: bytes) -> str:
        """Content id: keyed BLAKE3 under this writer's id key, so ids reveal nothing about
        the plaintext to anyone else, and equal data of two writers gets unrelated ids."""
        key = self._escrow_id_key if self.escrow_public is not None else self._chunk_key
        return blake3.blake3(data, key=key, max_threads=1).hexdigest()

    def digest(self) -> blake3.blake3:
        """A keyed BLAKE3 hasher (content digests only key holders can compute)."""
        return blake3.blake3(key=self._id_key)

    def mac(self, data: bytes) -> bytes:
        """The repository MAC of ``data`` (authenticates headers, refs and index files)."""
        return keyed_blake3(data, self._mac_key).digest()

    def fingerprint_hash(self, data: bytes) -> str:
        """A hash only holders of this repository's keys can compute (for fingerprints of
        secrets that have no public part): the MAC of ``data`` in its own context."""
        return fingerprint_hash(self._mac_key, data, keyed_blake3)

    def new_pack_cipher(self) -> tuple[Cipher, bytes]:
        """A new pack's cipher (a fresh data key) and that key wrapped for the recovery key."""
        dek = os.urandom(32)
        if self.escrow_public is not None:
            from lifeboat.crypto.escrow_key import wrap_to_escrow

            return Cipher(dek), ESCROW_PACK_TAG + wrap_to_escrow(self.escrow_public, dek, PACK_KEY_CONTEXT)
        return Cipher(dek), wrap_key(self.recipient_public, dek, PACK_KEY_CONTEXT)

    def pack_cipher(self, wrapped: bytes) -> Cipher:
        """The cipher of an existing pack, from its header (needs the recovery key; an
        escrowed pack needs the escrow key from custodians' shares, whatever else is held)."""
        if self.is_escrowed(wrapped):
            return self._escrowed_cipher(wrapped)
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

    def _escrowed_cipher(self, wrapped: bytes) -> Cipher:
        if self._escrow is None:
            needed = f"{self.escrow_threshold} custodians'" if self.escrow_threshold else "the custodians'"
            raise EscrowRequired(
                f"this is key material sealed to the escrow key: opening it needs {needed} "
                "escrow shares; no key file opens it",
                hint="pass --share FILE once per custodian",
            )
        with self._lock:
            cipher = self._deks.get(wrapped)
        if cipher is None:
            try:
                dek = self._escrow.unwrap(wrapped[len(ESCROW_PACK_TAG) :], PACK_KEY_CONTEXT)
            except IntegrityError:
                # sealed to another generation of the escrow key (`keys rotate --escrow`):
                # what the shares given cannot open, as without shares (a modified pack no
                # longer matches its name, which `check --read-data` reports on its own)
                raise EscrowRequired(
                    "cannot open an escrowed pack's data key: it is sealed to another escrow key "
                    "than the shares given ('keys rotate --escrow' replaced one), or it was modified",
                    hint="pass the shares of the escrow key it was sealed to",
                ) from None
            cipher = Cipher(dek)
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


def _escrow_ids(id_key: bytes, salt: bytes = b"") -> bytes:
    """The id key of key-material blobs written under ``id_key`` (their own, so key material
    never deduplicates into a recovery-key pack)."""
    return blake3.blake3(ESCROW_BLOB_IDS + salt, key=id_key).digest()
