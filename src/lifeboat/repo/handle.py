"""What the repository's inner modules need from an open repository, as a protocol.

``backup``, ``check``, ``prune``, ``reader``, ``references``, ``retention``, ``shards`` and
``immutability`` take a ``RepoHandle`` rather than ``Repository``: the façade in
``repository.py`` implements it and imports those modules, never the other way round, so the
package has no import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lifeboat.crypto.signed import ObjectType
from lifeboat.repo.index import Index, IndexCache
from lifeboat.repo.keyring import Keyring
from lifeboat.repo.local_cache import CacheSeal
from lifeboat.repo.model import SnapshotInfo
from lifeboat.repo.parents import ParentFile
from lifeboat.repo.sealed import MetadataCodec
from lifeboat.repo.trust import Trust
from lifeboat.storage.base import Storage

if TYPE_CHECKING:
    from lifeboat.repo.snapshots import SnapshotListing


class RepoHandle(Protocol):
    """An open repository: its storage, keys, index and settings (``Repository`` is one)."""

    storage: Storage
    config: dict[str, Any]
    keyring: Keyring
    key_id: str
    chunk_size: int
    pack_size: int
    workers: int
    cache_dir: Path | None
    ref_memo: dict[str, Any]  # verified refs kept in memory when there is no cache_dir

    @property
    def cache_seal(self) -> CacheSeal:
        """How this handle tags the cache files it keeps in the state dir."""
        ...

    @property
    def index_cache(self) -> IndexCache:
        """The local copies of index files (written through by every index file stored)."""
        ...

    @property
    def metadata(self) -> MetadataCodec:
        """How this handle seals, signs and opens snapshot headers and index files."""
        ...

    def index(self, refresh: bool = False) -> Index:
        """The loaded index of packs and blobs (``refresh`` reloads it)."""
        ...

    def load_index_for_writing(self) -> Index:
        """The index as a writer must see it (vanished packs dropped, orphans adopted)."""
        ...

    def release_index(self) -> None:
        """Lets go of the loaded index (the next ``index()`` loads it again)."""
        ...

    def read_blob(self, blob_id: str) -> bytes:
        """A blob's verified plaintext (needs the recovery key)."""
        ...

    def snapshot_listing(self, *, use_cache: bool = True, assets: Sequence[str] = ()) -> SnapshotListing:
        """Every snapshot header judged: accepted, refused (writer, reason), damaged, sealed."""
        ...

    def require_reader(self, what: str) -> None:
        """Raises the one-line "needs the recovery key" error for a write-only handle."""
        ...

    def ensure_writable(self) -> None:
        """Raises when this handle's backup key was retired."""
        ...

    def snapshots(self, asset: str | None = None) -> list[SnapshotInfo]:
        """The readable snapshots (of ``asset``, or all), oldest first."""
        ...

    def require_writer_for(self, asset: str) -> None:
        """Refuse up front what every reader would refuse (this key may not write ``asset``)."""
        ...

    def trust(self, refresh: bool = False) -> Trust | None:
        """The verified writer registry (None: an unsigned legacy repository)."""
        ...

    def sign_snapshot(self, snapshot_id: str, asset: str, body: bytes) -> bytes:
        """The writer's signature trailer for a snapshot header (empty: legacy repository)."""
        ...

    def sign_object(self, obj_type: ObjectType, name: str, asset: str | None, body: bytes) -> bytes:
        """The writer's signature trailer for a ref or WAL object (empty: legacy repository)."""
        ...

    def latest_snapshot_id(self, asset: str) -> str | None:
        """The asset's newest snapshot id, if any."""
        ...

    def parent_cache(self, asset: str, scope: str = "") -> ParentFile | None:
        """The asset's parent-snapshot cache and its MAC key (None: no cache); ``scope``
        names a cache of its own (one per escrow key of key material)."""
        ...
