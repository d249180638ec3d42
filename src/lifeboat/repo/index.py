"""The blob index: which pack holds each blob. Index files are immutable; many may exist."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from lifeboat.errors import AlreadyExistsError, ConfigError, IntegrityError, NotFoundError
from lifeboat.private import private_dir, write_private
from lifeboat.repo.format import (
    INDEX_MAGIC,
    BlobLocation,
    check_blob_entry,
    decode_framed,
    encode_framed,
    index_name,
    is_object_id,
)
from lifeboat.repo.keyring import Keyring
from lifeboat.storage.base import Storage

PackEntry = dict[str, Any]  # {"id": pack id, "blobs": [[id, type, offset, length, raw_length]]}


class Index:
    """In-memory union of index files, thread-safe."""

    def __init__(self) -> None:
        self._blobs: dict[str, BlobLocation] = {}
        self._packs: dict[str, list[str]] = {}
        self.files: dict[str, list[str]] = {}  # index file name -> pack ids it lists
        self.damaged: dict[str, str] = {}  # index file name -> problem
        self._lock = threading.Lock()

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)

    def get(self, blob_id: str) -> BlobLocation | None:
        """Where a blob is stored, or None."""
        return self._blobs.get(blob_id)

    def packs(self) -> dict[str, list[str]]:
        """The ids of the packs the index lists."""
        return self._packs

    def add_pack(self, pack: PackEntry) -> None:
        """Adds a pack's blob table."""
        pack_id = pack["id"]
        with self._lock:
            ids = self._packs.setdefault(pack_id, [])
            for blob_id, btype, offset, length, raw_length in pack["blobs"]:
                if blob_id not in self._blobs:
                    self._blobs[blob_id] = BlobLocation(pack_id, offset, length, raw_length, btype)
                ids.append(blob_id)

    def drop_packs(self, pack_ids: Iterable[str]) -> None:
        """Forgets packs (vanished or pruned)."""
        with self._lock:
            for pack_id in pack_ids:
                for blob_id in self._packs.pop(pack_id, []):
                    loc = self._blobs.get(blob_id)
                    if loc is not None and loc.pack == pack_id:
                        del self._blobs[blob_id]

    def blob_ids(self) -> set[str]:
        """Every blob id the index knows."""
        return set(self._blobs)


def encode_index(packs: list[PackEntry], keyring: Keyring) -> tuple[str, bytes]:
    """An index file's bytes for these pack entries (sealed with the keyring)."""
    data = encode_framed(INDEX_MAGIC, {"version": 1, "packs": packs}, keyring.mac)
    return hashlib.sha256(data).hexdigest(), data


def write_index(storage: Storage, packs: list[PackEntry], keyring: Keyring) -> str:
    """Store an index. Its name is its content's id, so finding the name taken means the
    same index is already there (two backups recovering the same orphan packs, a prune with
    nothing new to do): that is success, not a conflict."""
    index_id, data = encode_index(packs, keyring)
    try:
        storage.put(index_name(index_id), data)
    except AlreadyExistsError:
        # The name is the SHA-256 of these very bytes: a concurrent writer (a shard that
        # found this writer's packs as orphans and indexed them) stored the same index.
        pass
    return index_id


def decode_index(data: bytes, keyring: Keyring, name: str) -> list[PackEntry]:
    # The id is the SHA-256 of the bytes (repository-format.md): a file under another
    # name was renamed or replaced, even when its MAC is valid.
    """The pack entries of an index file (IntegrityError when damaged)."""
    if hashlib.sha256(data).hexdigest() != name.rsplit("/", 1)[-1]:
        raise IntegrityError(f"{name} does not match its name (content hash differs)")
    payload = decode_framed(INDEX_MAGIC, data, keyring.mac, name)
    packs = payload.get("packs")
    if not valid_packs(packs):
        raise IntegrityError(f"{name} is damaged (malformed pack entries)")
    return packs  # type: ignore[return-value]


def valid_packs(packs: object) -> bool:
    """Every pack entry well formed, so loading and reading can trust its fields."""
    if not isinstance(packs, list):
        return False
    for pack in packs:
        if not isinstance(pack, dict) or not is_object_id(pack.get("id")):
            return False
        blobs = pack.get("blobs")
        if not isinstance(blobs, list):
            return False
        for blob in blobs:
            if not isinstance(blob, list) or len(blob) != 5:
                return False
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in blob[2:]):
                return False
            try:
                check_blob_entry((blob[0], blob[1], blob[2], blob[3], blob[4]))
            except IntegrityError:
                return False
    return True


class IndexCache:
    """Index files are immutable, so a local copy never goes stale (restic's cache idea)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def get(self, name: str) -> list[PackEntry] | None:
        """A cached decoded index file, or None."""
        if self.directory is None:
            return None
        path = self.directory / name.replace("/", "_")
        try:
            packs = orjson.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        return packs if valid_packs(packs) else None

    def put(self, name: str, packs: list[PackEntry]) -> None:
        """Caches a decoded index file (private, under the cache dir)."""
        if self.directory is None:
            return
        try:
            private_dir(self.directory)
            data = json.dumps(packs, separators=(",", ":")).encode()
            write_private(self.directory / name.replace("/", "_"), data)
        except (OSError, ConfigError):  # a read-only state dir: private_dir says ConfigError
            pass  # the cache is an optimisation; the repository is the truth


def load_index(storage: Storage, keyring: Keyring, cache: IndexCache, workers: int = 8) -> Index:
    """The whole index from every index file in storage (cached where possible)."""
    index = Index()
    names = [obj.name for obj in storage.list("index/")]

    def load(name: str) -> tuple[str, list[PackEntry] | None, str | None]:
        cached = cache.get(name)
        if cached is not None:
            return name, cached, None
        try:
            packs = decode_index(storage.get(name), keyring, name)
        except IntegrityError as exc:
            return name, None, str(exc)
        except NotFoundError:
            return name, None, None  # removed by a concurrent prune
        cache.put(name, packs)
        return name, packs, None

    seen: set[str] = set()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while names:
            seen.update(names)
            vanished = False
            for name, packs, problem in pool.map(load, names):
                if problem is not None:
                    index.damaged[name] = problem
                if packs is None:
                    vanished = vanished or problem is None
                    continue
                index.files[name] = [p["id"] for p in packs]
                for pack in packs:
                    index.add_pack(pack)
            # A file listed a moment ago is gone: a consolidation (or prune) superseded it,
            # and wrote the index that replaces it before deleting it, so list again.
            names = [o.name for o in storage.list("index/") if o.name not in seen] if vanished else []
    return index
