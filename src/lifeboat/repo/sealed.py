"""Sealed, signed metadata objects: snapshot headers and index files (issue #14).

A storage provider reads no file name, object key, size or time in them, and another
writer reads none of them either; the writer reads back its own (parents, dedup) and the
recovery side reads everybody's (crypto/metadata.py). Stored form::

    object    = sealed ‖ trailer                  object id = SHA-256(sealed)
    sealed    = crypto/metadata.py seal of plaintext; the AAD's name is the namespace
                ("snapshots/" or "index/") and its key the signer's public key
    plaintext = magic ("LBSN" | "LBIX") ‖ u8(2) ‖ zstd(canonical JSON)   padded (Padmé, >= 512 B)
    trailer   = the signer's 101-byte signature (crypto/signed.py) of
                statement(type, repository id, "<namespace><id>", asset, sealed)

Encrypt-then-sign: anyone can check the signature without a key, and the AAD binds the
signer, so a trailer moved onto another writer's ciphertext gives an object that does not
open. The AAD names the namespace, not the full name: the name is the hash of the sealed
bytes and cannot be inside them; the hash binds the name, the statement binds the name and
type, the AAD keeps a header from opening as an index. No MAC inside: the AEAD and the
signature authenticate it.

Older objects (``magic u8(1) mac zstd(json)``, with or without a trailer) are still read;
an object of an unknown layout is refused with one line, never a traceback.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lifeboat.crypto.metadata import METADATA_MAGIC, open_metadata_as_recovery, open_own_with, seal_for
from lifeboat.crypto.signed import (
    SIGNATURE_MAGIC,
    SIGNATURE_SIZE,
    ObjectType,
    Signature,
    signature_matches,
    statement,
)
from lifeboat.crypto.writers import Refusal, raw_public
from lifeboat.errors import IntegrityError, KeyError_
from lifeboat.repo.format import (
    TableSeal,
    canonical_json,
    decode_framed,
    encode_framed,
    json_of_compressed,
)
from lifeboat.repo.trust import SignatureCheck, check_signature, sign_statement

SEALED_INNER_VERSION = 2  # the plaintext inside a sealed object (1 is the MAC'd plaintext form)
METADATA_KEY_INFO = b"lifeboat/writer-metadata-key/v1"
# The config setting of repositories whose index files must be sealed and signed (every
# repository created since); older ones with writer identities still accept MAC'd indexes.
SEALED_SETTING = "metadata_sealed"
# The AAD name of a pack's blob table, followed by the SHA-256 of the pack's wrapped data key
# (unique to the pack: a table opens in no other pack). A pack's name is the hash of its
# bytes, table included, so it cannot be named; its writer is not recorded (that would
# group packs by writer), so the AAD's signer key is empty.
PACK_TABLE_NAME = "pack-table/"


def _table_name(wrapped_key: bytes) -> str:
    return PACK_TABLE_NAME + hashlib.sha256(wrapped_key).hexdigest()


def metadata_key_of(repo_id: str, signing: Ed25519PrivateKey) -> bytes:
    """The key a signer seals its own metadata under, derived from its signing seed (its key
    file's secret, one use per domain): what it seals, only it (and the recovery side) opens."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=repo_id.encode(), info=METADATA_KEY_INFO).derive(
        signing.private_bytes_raw()
    )


@dataclass(frozen=True)
class Unopened:
    """A sealed object this handle cannot open: another writer's (``refusal`` None, the
    signer known from its trailer), or one no reader can open (unsigned, malformed trailer)."""

    signer: bytes | None
    refusal: Refusal | None = None
    body: bytes = field(default=b"", repr=False, compare=False)  # the sealed bytes, as signed
    signature: bytes = field(default=b"", repr=False, compare=False)

    def claims(self, obj_type: ObjectType, repo_id: str, name: str, asset: str | None) -> bool:
        """Whether the trailer signs this object as one of ``asset``: the statement names the
        asset, so a reader without the key learns which asset a header claims among those it
        tries, and nothing else."""
        if self.signer is None or not self.signature:
            return False
        return signature_matches(
            self.signer, statement(obj_type, repo_id, name, asset, self.body), self.signature
        )

    def to_json(self) -> list[str]:
        """The cached form (that of a ``SignatureCheck``)."""
        return SignatureCheck(self.signer, self.refusal).to_json()

    @classmethod
    def from_json(cls, data: object) -> Unopened | None:
        """From its cached form (None when unusable)."""
        check = SignatureCheck.from_json(data)
        return cls(check.signer, check.refusal) if check is not None else None


@dataclass(frozen=True)
class Opened:
    """An object's fields and what its trailer proves; ``sealed`` False: a plaintext object
    of the earlier layout."""

    payload: dict[str, Any]
    check: SignatureCheck
    sealed: bool


def split_signed(object_id: str, data: bytes) -> tuple[bytes, bytes | None] | None:
    """A content-addressed object's body and signature trailer (None: no trailer), or None
    when neither the whole nor the part before a trailer matches ``object_id``."""
    if hashlib.sha256(data).hexdigest() == object_id:
        return data, None
    body, trailer = data[:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:]
    if trailer.startswith(SIGNATURE_MAGIC) and hashlib.sha256(body).hexdigest() == object_id:
        return body, trailer
    return None


def inner_plaintext(magic: bytes, payload: dict[str, Any]) -> bytes:
    """What is sealed for ``payload``: magic, version, compressed canonical JSON."""
    text = canonical_json(payload)
    return magic + bytes([SEALED_INNER_VERSION]) + zstandard.ZstdCompressor(level=3).compress(text)


def payload_of_inner(magic: bytes, plaintext: bytes, what: str) -> dict[str, Any]:
    """The JSON object of ``inner_plaintext`` (IntegrityError: another object, or newer)."""
    if len(plaintext) < 5 or plaintext[:4] != magic:
        raise IntegrityError(f"{what} is damaged (not the object its name says)")
    if plaintext[4] != SEALED_INNER_VERSION:
        raise IntegrityError(f"{what} has unsupported sealed format version {plaintext[4]} (newer lifeboat?)")
    return json_of_compressed(plaintext[5:], what)


class MetadataCodec:
    """How one open repository writes and reads snapshot headers and index files.

    ``signing``: the writer's key (or the root key on the recovery side without a key
    file); ``recovery``: the recovery chain's private keys, newest first (empty on a backup
    host); ``seal`` False: a legacy repository (MAC'd plaintext, no trailer, as before).
    """

    def __init__(
        self,
        repo_id: str,
        mac: Callable[[bytes], bytes],
        *,
        signing: Ed25519PrivateKey | None,
        recovery_public: bytes,
        recovery: Sequence[X25519PrivateKey] = (),
        seal: bool = True,
        require_signed_indexes: bool = False,
        earlier: Mapping[bytes, bytes] | None = None,
    ) -> None:
        self.repo_id = repo_id
        self.mac = mac
        self.signing = signing
        self.public = raw_public(signing) if signing is not None else None
        self._metadata_key = metadata_key_of(repo_id, signing) if signing is not None else None
        self.recovery_public = recovery_public
        self.recovery = list(recovery)
        self.seal = seal
        self.require_signed_indexes = require_signed_indexes
        # public signing key -> metadata key: this writer now and its earlier generations
        self._own: dict[bytes, bytes] = dict(earlier or {})
        if self.public is not None and self._metadata_key is not None:
            self._own[self.public] = self._metadata_key

    @property
    def own_publics(self) -> frozenset[bytes]:
        """This writer's public signing keys, now and in its earlier generations."""
        return frozenset(self._own)

    def owns(self, signer: bytes | None) -> bool:
        """Whether ``signer`` is this writer, now or in an earlier generation (its objects open)."""
        return signer is not None and signer in self._own

    @property
    def reads_all(self) -> bool:
        """Whether every writer's objects open (the recovery side)."""
        return bool(self.recovery)

    @property
    def table_seal(self) -> TableSeal | None:
        """How this handle seals the blob tables of the packs it writes (None: plaintext
        tables, a repository without writer identities)."""
        return self.seal_table if self.seal and self._metadata_key is not None else None

    def seal_table(self, table: bytes, wrapped_key: bytes) -> bytes:
        """A pack's blob table sealed for this writer (its metadata key) and the recovery
        side, bound to the pack by its wrapped data key."""
        if self._metadata_key is None:
            raise KeyError_("this key has no writer identity: nothing can be sealed with it")
        name = _table_name(wrapped_key)
        return seal_for(self.repo_id, b"", self._metadata_key, self.recovery_public, name, table)

    def open_table(self, sealed: bytes, wrapped_key: bytes) -> bytes:
        """A pack's blob table: the recovery side opens every one, a writer its own (any of
        its generations); IntegrityError for another writer's, or a damaged one."""
        name = _table_name(wrapped_key)
        if self.recovery:
            return open_metadata_as_recovery(self.recovery, self.repo_id, name, b"", sealed)
        for metadata_key in self._own.values():
            try:
                return open_own_with(self.repo_id, b"", metadata_key, "", name, sealed)
            except IntegrityError:
                continue
        raise IntegrityError("pack trailer does not open with this key (another writer's, or damaged)")

    def seal_named(self, name: str, plaintext: bytes) -> bytes:
        """``plaintext`` sealed for this signer and the recovery side, bound to ``name`` (an
        object whose name is not its hash: audit copies)."""
        if self.public is None or self._metadata_key is None:
            raise KeyError_("this key has no writer identity: nothing can be sealed with it")
        return seal_for(self.repo_id, self.public, self._metadata_key, self.recovery_public, name, plaintext)

    def open_named(self, name: str, signer: bytes, sealed: bytes) -> bytes | None:
        """What ``seal_named`` sealed under ``name`` for ``signer``: None when this handle
        holds no key for it (another writer's, on a backup host); IntegrityError when it
        does and the object does not open."""
        if self.recovery:
            return open_metadata_as_recovery(self.recovery, self.repo_id, name, signer, sealed)
        if signer in self._own:
            return open_own_with(self.repo_id, signer, self._own[signer], "", name, sealed)
        return None

    def encode(
        self, obj_type: ObjectType, namespace: str, magic: bytes, payload: dict[str, Any], asset: str | None
    ) -> tuple[str, bytes]:
        """The object's id and stored bytes: sealed and signed, or (legacy) MAC'd plaintext."""
        if not self.seal:
            data = encode_framed(magic, payload, self.mac)
            return hashlib.sha256(data).hexdigest(), data
        if self.signing is None or self.public is None or self._metadata_key is None:
            raise KeyError_(
                "this backup key has no writer identity, and this repository accepts only signed objects",
                hint="issue a writer key with 'lifeboat keys add-writer NAME --assets A,B --out FILE'",
            )
        sealed = seal_for(
            self.repo_id,
            self.public,
            self._metadata_key,
            self.recovery_public,
            namespace,
            inner_plaintext(magic, payload),
        )
        object_id = hashlib.sha256(sealed).hexdigest()
        trailer = sign_statement(self.signing, self.repo_id, obj_type, namespace + object_id, asset, sealed)
        return object_id, sealed + trailer

    def trailer_check(
        self, obj_type: ObjectType, namespace: str, object_id: str, data: bytes
    ) -> SignatureCheck | None:
        """What a stored object's trailer proves, without opening it; None when its bytes do
        not match its name. For an object this host holds opened from these very bytes (its
        name is their hash): ``check`` reads it again for damage without decoding it."""
        parts = split_signed(object_id, data)
        if parts is None:
            return None
        body, trailer = parts
        return check_signature(self.repo_id, obj_type, namespace + object_id, None, body, trailer)

    def own_check(self) -> SignatureCheck:
        """What ``decode`` finds in the trailer of an object this handle encoded: its
        signature when sealed; none in the legacy plaintext layout, which is not signed."""
        return SignatureCheck(self.public) if self.seal else SignatureCheck(None, Refusal.UNSIGNED)

    def decode(
        self,
        obj_type: ObjectType,
        namespace: str,
        magic: bytes,
        object_id: str,
        data: bytes,
        asset_of: Callable[[dict[str, Any]], str | None],
        what: str,
    ) -> Opened | Unopened:
        """The object's fields and signature check, or ``Unopened`` when this handle cannot
        open it. IntegrityError (one line) when damaged, renamed or of an unknown layout."""
        parts = split_signed(object_id, data)
        if parts is None:
            raise IntegrityError(f"{what} does not match its name (content hash differs)")
        body, trailer = parts
        name = namespace + object_id
        if body[:4] == magic:  # the earlier plaintext layout (MAC'd, maybe signed)
            payload = decode_framed(magic, body, self.mac, what)
            check = check_signature(self.repo_id, obj_type, name, asset_of(payload), body, trailer)
            return Opened(payload, check, sealed=False)
        if body[:4] != METADATA_MAGIC:
            raise IntegrityError(
                f"{what} has a layout this lifeboat cannot read (written by a newer version?)",
                hint="upgrade lifeboat, or run 'lifeboat check' to list such objects",
            )
        if trailer is None:
            return Unopened(None, Refusal.UNSIGNED)
        try:
            parsed = Signature.from_bytes(trailer)
        except IntegrityError:
            return Unopened(None, Refusal.MALFORMED)
        signer = parsed.public
        try:
            if self.recovery:
                plaintext = open_metadata_as_recovery(self.recovery, self.repo_id, namespace, signer, body)
            elif signer in self._own:
                plaintext = open_own_with(self.repo_id, signer, self._own[signer], "", namespace, body)
            else:
                return Unopened(signer, None, body, parsed.signature)
        except IntegrityError:
            raise IntegrityError(
                f"{what} does not open: modified, sealed by another key than the one that signed "
                "it, or sealed for a newer recovery key"
            ) from None
        payload = payload_of_inner(magic, plaintext, what)
        check = check_signature(self.repo_id, obj_type, name, asset_of(payload), body, trailer)
        return Opened(payload, check, sealed=True)
