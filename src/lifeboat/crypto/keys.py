"""The key hierarchy: write-only backup keys and the recovery key.

* The **recovery key** is an X25519 private key (32 random bytes). It unwraps every data
  key in the repository, so restores, ``check --read-data``, ``forget`` and ``prune`` need
  it. It is written once to a 0600 file or split into SLIP-39 shares (crypto/escrow.py).
* A **backup key** holds what adding data needs and nothing that reads it back: the
  recovery *public* key (to wrap fresh data keys) and the chunk-id key (to compute
  content ids for deduplication). A stolen backup host can add data, not read it.
* In a repository with a writer registry (issue #14) the backup key file is also a
  **writer key**: the writer's name, key generation and Ed25519 signing key. Readers accept
  only objects signed by a writer the root-signed registry allows (crypto/writers.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lifeboat import clock
from lifeboat.crypto.envelope import public_bytes
from lifeboat.errors import KeyError_

BACKUP_KEY_TYPE = "lifeboat-backup-key"
RECOVERY_KEY_TYPE = "lifeboat-recovery-key"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def write_secret_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` created with mode 0600 (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyError_(f"{path} already exists; refusing to overwrite a key file") from None
    except OSError as exc:
        raise KeyError_(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o600)


def _read_key_json(path: Path, expected_type: str, what: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyError_(f"{what} file {path} does not exist") from None
    except OSError as exc:
        raise KeyError_(f"cannot read {what} file {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError
    except ValueError:
        raise KeyError_(f"{path} is not a lifeboat {what} file") from None
    if data.get("type") != expected_type:
        raise KeyError_(f"{path} is not a lifeboat {what} file (it is {data.get('type', 'unknown')!r})")
    return data


@dataclass(frozen=True)
class BackupKey:
    """What a backup host holds: can add data, cannot read it back."""

    repo_id: str
    key_id: str
    recovery_public: bytes
    id_key: bytes
    created: str
    writer: str | None = None  # the writer's name in the registry (None: a legacy key)
    generation: int = 0
    signing_seed: bytes | None = field(default=None, repr=False)  # Ed25519 private seed
    # The writer's own chunk-id key (dedup stays within this writer's data). None: a key file
    # from before per-writer id keys, whose chunk ids use the repository-wide ``id_key``.
    chunk_id_key: bytes | None = field(default=None, repr=False)
    # The metadata keys of this writer's earlier generations, by their public signing key: a
    # rotated host still opens the headers and index files it sealed before (its snapshots,
    # parents, status). Only opening keys travel, never an earlier signing key.
    earlier: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False)

    @property
    def signing(self) -> Ed25519PrivateKey | None:
        """The writer's signing key (None for a key file from before writer identities)."""
        return Ed25519PrivateKey.from_private_bytes(self.signing_seed) if self.signing_seed else None

    def to_json(self) -> dict[str, Any]:
        """The key file's content."""
        data: dict[str, Any] = {
            "type": BACKUP_KEY_TYPE,
            "version": 1,
            "repo_id": self.repo_id,
            "key_id": self.key_id,
            "recovery_public": _b64(self.recovery_public),
            "id_key": _b64(self.id_key),
            "created": self.created,
        }
        if self.writer is not None and self.signing_seed is not None:
            data["writer"] = {
                "name": self.writer,
                "generation": self.generation,
                "signing_key": _b64(self.signing_seed),
            }
            if self.chunk_id_key is not None:
                data["writer"]["id_key"] = _b64(self.chunk_id_key)
            if self.earlier:
                data["writer"]["earlier"] = [
                    {"public": _b64(public), "metadata_key": _b64(key)} for public, key in self.earlier
                ]
        return data

    def save(self, path: Path, *, overwrite: bool = False) -> None:
        """Writes the key file, mode 0600 (refuses to overwrite unless asked)."""
        write_secret_file(path, json.dumps(self.to_json(), indent=2).encode() + b"\n", overwrite=overwrite)

    def __repr__(self) -> str:  # never print key bytes
        return f"BackupKey(repo_id={self.repo_id!r}, key_id={self.key_id!r})"


@dataclass(frozen=True)
class RecoveryKey:
    """The X25519 private key that unwraps every data key of a repository."""

    repo_id: str
    secret: bytes

    @classmethod
    def generate(cls, repo_id: str) -> RecoveryKey:
        """A new random recovery key for the repository."""
        return cls(repo_id=repo_id, secret=secrets.token_bytes(32))

    @classmethod
    def from_secret(cls, repo_id: str, secret: bytes) -> RecoveryKey:
        """The recovery key from its 32-byte secret (what escrow splits)."""
        if len(secret) != 32:
            raise KeyError_("recovery secret has the wrong length")
        return cls(repo_id=repo_id, secret=secret)

    @property
    def private(self) -> X25519PrivateKey:
        """The X25519 private key."""
        return X25519PrivateKey.from_private_bytes(self.secret)

    @property
    def public(self) -> bytes:
        """The raw X25519 public key."""
        return public_bytes(self.private)

    def fingerprint(self) -> str:
        """A public, non-reversible name for this key (safe to log and record)."""
        return recovery_fingerprint(self.public)

    def to_json(self) -> dict[str, Any]:
        """The key file's content."""
        return {
            "type": RECOVERY_KEY_TYPE,
            "version": 1,
            "repo_id": self.repo_id,
            "secret": _b64(self.secret),
            "fingerprint": self.fingerprint(),
        }

    def save(self, path: Path, *, overwrite: bool = False) -> None:
        """Writes the key file, mode 0600 (refuses to overwrite unless asked)."""
        write_secret_file(path, json.dumps(self.to_json(), indent=2).encode() + b"\n", overwrite=overwrite)

    def __repr__(self) -> str:
        return f"RecoveryKey(repo_id={self.repo_id!r}, fingerprint={self.fingerprint()!r})"


def recovery_fingerprint(public: bytes) -> str:
    """The public fingerprint of a recovery public key."""
    return hashlib.sha256(b"lifeboat-recovery-key/" + public).hexdigest()[:32]


def new_backup_key(repo_id: str, recovery_public: bytes, id_key: bytes) -> BackupKey:
    """A new backup key for the repository (a fresh key id)."""
    return BackupKey(
        repo_id=repo_id,
        key_id=secrets.token_hex(8),
        recovery_public=recovery_public,
        id_key=id_key,
        created=clock.now().isoformat(timespec="seconds"),
    )


def load_backup_key(path: Path) -> BackupKey:
    """The backup key in ``path`` (KeyError_ with a hint when unreadable)."""
    data = _read_key_json(path, BACKUP_KEY_TYPE, "backup key")
    try:
        writer = data.get("writer")
        seed = _unb64(writer["signing_key"]) if writer is not None else None
        if seed is not None and len(seed) != 32:
            raise ValueError("signing key of the wrong length")
        chunk_id_key = _unb64(writer["id_key"]) if writer is not None and "id_key" in writer else None
        if chunk_id_key is not None and len(chunk_id_key) != 32:
            raise ValueError("id key of the wrong length")
        earlier = tuple(
            (_unb64(item["public"]), _unb64(item["metadata_key"]))
            for item in (writer.get("earlier", []) if writer is not None else [])
        )
        if any(len(public) != 32 or len(key) != 32 for public, key in earlier):
            raise ValueError("earlier key of the wrong length")
        return BackupKey(
            repo_id=str(data["repo_id"]),
            key_id=str(data["key_id"]),
            recovery_public=_unb64(data["recovery_public"]),
            id_key=_unb64(data["id_key"]),
            created=str(data.get("created", "")),
            writer=str(writer["name"]) if writer is not None else None,
            generation=int(writer["generation"]) if writer is not None else 0,
            signing_seed=seed,
            chunk_id_key=chunk_id_key,
            earlier=earlier,
        )
    except (KeyError, ValueError, TypeError):
        raise KeyError_(f"backup key file {path} is damaged") from None


def load_recovery_key(path: Path) -> RecoveryKey:
    """The recovery key in ``path`` (KeyError_ with a hint when unreadable)."""
    data = _read_key_json(path, RECOVERY_KEY_TYPE, "recovery key")
    try:
        return RecoveryKey.from_secret(str(data["repo_id"]), _unb64(data["secret"]))
    except (KeyError, ValueError, TypeError):
        raise KeyError_(f"recovery key file {path} is damaged") from None
