"""The repository: opening, keys, blob reads, snapshots, named refs and records."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from lifeboat.crypto.envelope import WRAPPED_KEY_LEN, unwrap_key, wrap_key
from lifeboat.crypto.keys import BackupKey, RecoveryKey, new_backup_key, recovery_fingerprint
from lifeboat.errors import (
    AlreadyExistsError,
    ConfigError,
    IntegrityError,
    KeyError_,
    LifeboatError,
    LockedError,
    NotFoundError,
)
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo.backup import BackupSession, BlobWriter
from lifeboat.repo.chunking import DEFAULT_CHUNK_SIZE, decode_payload
from lifeboat.repo.format import (
    CONFIG_NAME,
    FORMAT_VERSION,
    REF_MAGIC,
    check_blob_entry,
    decode_framed,
    encode_framed,
    pack_name,
    parse_pack_header,
    parse_pack_trailer,
    record_name,
    ref_name,
)
from lifeboat.repo.immutability import refuse_lying_endpoint
from lifeboat.repo.index import Index, IndexCache, load_index, write_index
from lifeboat.repo.keyring import Keyring
from lifeboat.repo.locks import RepoLock
from lifeboat.repo.model import RefInfo, SnapshotInfo
from lifeboat.repo.reader import SnapshotReader
from lifeboat.repo.recovery_chain import resolve_chain
from lifeboat.repo.snapshots import load_snapshots
from lifeboat.storage.base import Storage

DEFAULT_PACK_SIZE = 8 << 20
ID_KEY_CONTEXT = b"id-key"
PACK_HEADER_LEN = 7 + WRAPPED_KEY_LEN


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode())


class Repository:
    """One repository on one storage, opened with a backup key or a recovery key."""

    def __init__(
        self,
        storage: Storage,
        config: dict[str, Any],
        keyring: Keyring,
        key_id: str,
        cache_dir: Path | None,
    ) -> None:
        self.storage = storage
        self.config = config
        self.keyring = keyring
        self.key_id = key_id
        self.id: str = config["id"]
        self.chunk_size: int = int(config.get("chunk_size", DEFAULT_CHUNK_SIZE))
        self.pack_size: int = int(config.get("pack_size", DEFAULT_PACK_SIZE))
        self.workers = max(2, (os.cpu_count() or 2) + 1)
        self.cache_dir: Path | None = cache_dir / self.id if cache_dir is not None else None
        self._index: Index | None = None
        self._index_lock = threading.Lock()
        self._headers: dict[str, bytes] = {}

    # -- creation and opening ---------------------------------------------------------

    @classmethod
    def create(
        cls,
        storage: Storage,
        *,
        lock_days: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        pack_size: int = DEFAULT_PACK_SIZE,
        cache_dir: Path | None = None,
    ) -> tuple[Repository, BackupKey, RecoveryKey]:
        if storage.exists(CONFIG_NAME):
            raise AlreadyExistsError(
                f"a repository already exists at {storage.url}",
                hint="use it with its existing keys, or choose another location",
            )
        refuse_lying_endpoint(storage)
        repo_id = secrets.token_hex(16)
        recovery = RecoveryKey.generate(repo_id)
        id_key = secrets.token_bytes(32)
        config = {
            "version": FORMAT_VERSION,
            "id": repo_id,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "recovery_public": _b64(recovery.public),
            "recovery_fingerprint": recovery.fingerprint(),
            "id_key_wrapped": _b64(wrap_key(recovery.public, id_key, ID_KEY_CONTEXT)),
            "chunk_size": chunk_size,
            "pack_size": pack_size,
            "lock_days": lock_days,
            "suite": "aes-256-gcm",
        }
        storage.put(CONFIG_NAME, json.dumps(config, indent=2).encode())
        backup_key = new_backup_key(repo_id, recovery.public, id_key)
        repo = cls(storage, config, Keyring.for_backup(backup_key), backup_key.key_id, cache_dir)
        repo.put_record(
            f"keys/{backup_key.key_id}.json",
            {
                "key_id": backup_key.key_id,
                "created": backup_key.created,
                "status": "active",
            },
        )
        return repo, backup_key, recovery

    @staticmethod
    def read_config(storage: Storage) -> dict[str, Any]:
        try:
            config = json.loads(storage.get(CONFIG_NAME))
        except NotFoundError:
            raise ConfigError(
                f"no lifeboat repository at {storage.url}", hint="create one with 'lifeboat init'"
            ) from None
        except ValueError:
            raise IntegrityError(f"repository config at {storage.url} is damaged") from None
        if config.get("version") != FORMAT_VERSION:
            raise ConfigError(f"repository format version {config.get('version')} is not supported")
        return dict(config)

    @classmethod
    def open(
        cls,
        storage: Storage,
        *,
        backup_key: BackupKey | None = None,
        recovery_key: RecoveryKey | None = None,
        cache_dir: Path | None = None,
    ) -> Repository:
        config = cls.read_config(storage)
        if recovery_key is not None:
            chain = resolve_chain(RecordsView(storage, config), recovery_key)
            check_recovery_key(config, chain[-1])
            try:
                id_key = unwrap_key(chain[-1].private, _unb64(config["id_key_wrapped"]), ID_KEY_CONTEXT)
            except IntegrityError:
                raise KeyError_("the recovery key does not open this repository") from None
            # Data written with the recovery key is wrapped for the newest key, never a retired one.
            keyring = Keyring(config["id"], id_key, recovery_key.public, recovery_key, older=chain[1:])
            key_id = backup_key.key_id if backup_key is not None else "recovery"
            return cls(storage, config, keyring, key_id, cache_dir)
        if backup_key is None:
            raise KeyError_("opening the repository needs a backup key or the recovery key")
        if backup_key.repo_id != config["id"]:
            raise KeyError_(
                f"backup key belongs to repository {backup_key.repo_id[:12]}, not {config['id'][:12]}",
                hint="check [repository] keyfile in the policy",
            )
        return cls(storage, config, Keyring.for_backup(backup_key), backup_key.key_id, cache_dir)

    # -- index ------------------------------------------------------------------------------

    def index(self, refresh: bool = False) -> Index:
        with self._index_lock:
            if self._index is None or refresh:
                cache = IndexCache(self.cache_dir / "index" if self.cache_dir else None)
                self._index = load_index(self.storage, self.keyring, cache)
            return self._index

    def load_index_for_writing(self) -> Index:
        """The index, minus packs that vanished, plus complete orphan packs of killed runs."""
        index = self.index(refresh=True)
        stored = {obj.name.rsplit("/", 1)[-1] for obj in self.storage.list("data/")}
        index.drop_packs([p for p in list(index.packs()) if p not in stored])
        orphans = [p for p in stored if p not in index.packs()]
        recovered = []
        for pack_id in orphans:
            try:
                data = self.storage.get(pack_name(pack_id))
            except NotFoundError:
                continue
            if hashlib.sha256(data).hexdigest() != pack_id:
                continue  # damaged; check reports it, prune removes it
            try:
                blobs = parse_pack_trailer(data)
            except IntegrityError:
                continue
            entry = {"id": pack_id, "blobs": [list(b) for b in blobs]}
            index.add_pack(entry)
            recovered.append(entry)
        if recovered:
            write_index(self.storage, recovered, self.keyring)
        return index

    # -- reading blobs ------------------------------------------------------------------------

    def _pack_header(self, pack_id: str) -> bytes:
        header = self._headers.get(pack_id)
        if header is None:
            raw = self.storage.get(pack_name(pack_id), 0, PACK_HEADER_LEN)
            header, _ = parse_pack_header(raw)  # read_blob names the pack in any error
            self._headers[pack_id] = header
        return header

    def read_blob(self, blob_id: str) -> bytes:
        """The blob's plaintext, authenticated, bounded and checked against its id; every
        failure names the chunk and its pack."""
        loc = self.index().get(blob_id)
        if loc is None:
            loc = self.index(refresh=True).get(blob_id)  # written after our index was loaded
        if loc is None:
            damaged = sorted(self.index().damaged)
            hint = f"damaged index files: {', '.join(damaged[:3])}" if damaged else None
            raise IntegrityError(f"chunk {blob_id[:16]} is missing from the repository", hint=hint)
        where = f"chunk {blob_id[:16]} in {pack_name(loc.pack)}"
        try:
            check_blob_entry((blob_id, loc.type, loc.offset, loc.length, loc.raw_length))
            cipher = self.keyring.pack_cipher(self._pack_header(loc.pack))
            envelope = self.storage.get(pack_name(loc.pack), loc.offset, loc.length)
            if len(envelope) != loc.length:
                raise IntegrityError("the pack is shorter than the index says")
            try:
                payload = cipher.open(envelope, bytes.fromhex(blob_id))
            except IntegrityError:
                raise IntegrityError("failed authentication") from None
            data = decode_payload(payload, loc.raw_length)
        except IntegrityError as exc:
            message = str(exc)
            raise IntegrityError(message if message.startswith(where) else f"{where}: {message}") from None
        if self.keyring.blob_id(data) != blob_id:
            raise IntegrityError(f"{where} does not match its id")
        return data

    # -- snapshots ----------------------------------------------------------------------------

    def backup(
        self,
        asset: str,
        kind: str,
        *,
        labels: dict[str, str] | None = None,
        chunk_size: int | None = None,
        progress: ProgressSink = NO_PROGRESS,
        host: str | None = None,
        use_parent_cache: bool = True,
        file_sha256: bool = True,
    ) -> BackupSession:
        """``file_sha256=False`` records no whole-file SHA-256: the ordered chunk ids (keyed
        BLAKE3, checked on every read) already pin each file's content, and hashing every
        byte a second time is a fifth of a large database backup's CPU."""
        return BackupSession(
            self,
            asset=asset,
            kind=kind,
            labels=labels,
            chunk_size=chunk_size,
            progress=progress,
            host=host,
            use_parent_cache=use_parent_cache,
            file_sha256=file_sha256,
        )

    def parent_cache_path(self, asset: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / "parents" / f"{hashlib.sha256(asset.encode()).hexdigest()[:16]}.json.zst"

    def snapshots(self, asset: str | None = None) -> list[SnapshotInfo]:
        good, _ = load_snapshots(self.storage, self.keyring)
        return [s for s in good if asset is None or s.asset == asset]

    def snapshots_and_damaged(self, asset: str | None = None) -> tuple[list[SnapshotInfo], dict[str, str]]:
        """Readable snapshots and the damaged ones (object name -> problem). A damaged
        snapshot's asset is unknown, so ``asset`` filters only the readable ones."""
        good, damaged = load_snapshots(self.storage, self.keyring)
        return [s for s in good if asset is None or s.asset == asset], damaged

    def latest_snapshot_id(self, asset: str) -> str | None:
        snaps = self.snapshots(asset)
        return snaps[-1].id if snaps else None

    def find_snapshot(
        self, asset: str | None = None, *, snapshot_id: str | None = None, at: datetime | None = None
    ) -> SnapshotInfo:
        snaps = self.snapshots(asset)
        if snapshot_id:
            matches = [s for s in snaps if s.id.startswith(snapshot_id)]
            if not matches:
                raise NotFoundError(f"no snapshot {snapshot_id}" + (f" of asset {asset}" if asset else ""))
            if len(matches) > 1:
                raise ConfigError(f"snapshot id {snapshot_id} is ambiguous; give more characters")
            return matches[0]
        if at is not None:
            if at.tzinfo is None:
                at = at.astimezone(UTC)
            before = [s for s in snaps if s.time <= at]
            if not before:
                oldest = snaps[0].time.isoformat(timespec="seconds") if snaps else "none"
                raise NotFoundError(
                    f"no snapshot of {asset} at or before {at.isoformat(timespec='seconds')}",
                    hint=f"the oldest snapshot is from {oldest}",
                )
            return before[-1]
        if not snaps:
            raise NotFoundError(f"asset {asset} has no snapshots yet", hint=f"run 'lifeboat backup {asset}'")
        return snaps[-1]

    def reader(self, info: SnapshotInfo | str) -> SnapshotReader:
        if isinstance(info, str):
            info = self.find_snapshot(snapshot_id=info)
        if not self.keyring.can_read:
            self.keyring.pack_cipher(b"")  # raises the one-line "needs the recovery key" error
        return SnapshotReader(self, info)

    # -- named refs -----------------------------------------------------------------------------

    def _decode_ref(self, name: str, data: bytes) -> RefInfo:
        p = decode_framed(REF_MAGIC, data, self.keyring.mac, f"ref {name}")
        try:
            return RefInfo(
                namespace=p["namespace"],
                name=p["name"],
                size=int(p["size"]),
                digest=p["digest"],
                chunks=list(p["chunks"]),
                time=datetime.fromisoformat(p["time"]),
                labels=dict(p.get("labels", {})),
            )
        except (KeyError, TypeError, ValueError):
            raise IntegrityError(f"ref {name} is damaged") from None

    def get_ref(self, namespace: str, name: str) -> RefInfo:
        object_name = ref_name(namespace, name)
        return self._decode_ref(object_name, self.storage.get(object_name))

    def list_refs(self, namespace: str) -> list[RefInfo]:
        prefix = f"refs/{namespace}/"
        refs = []
        for obj in self.storage.list(prefix):
            try:
                refs.append(self._decode_ref(obj.name, self.storage.get(obj.name)))
            except NotFoundError:
                continue
        return sorted(refs, key=lambda r: r.name)

    def list_ref_names(self, namespace: str) -> list[str]:
        prefix = f"refs/{namespace}/"
        return sorted(obj.name[len(prefix) :] for obj in self.storage.list(prefix))

    def put_ref(
        self,
        namespace: str,
        name: str,
        data: bytes | BinaryIO,
        labels: dict[str, str] | None = None,
        chunk_size: int | None = None,
    ) -> RefInfo:
        """Store a named stream once. Same content again: no-op; different: AlreadyExistsError.

        Refs are meant for objects that fit in memory (WAL segments, records of a few MiB).
        """
        content = data if isinstance(data, bytes) else data.read()
        digest = self.keyring.digest()
        digest.update(content)
        info = RefInfo(
            namespace,
            name,
            len(content),
            digest.hexdigest(),
            [],
            datetime.now(UTC),
            {str(k): str(v) for k, v in (labels or {}).items()},
        )
        existing = self._existing_ref(namespace, name)
        if existing is not None:
            return self._same_or_conflict(existing, info)
        self.ensure_writable()
        object_name = ref_name(namespace, name)
        with RepoLock(self.storage, exclusive=False, operation=f"put {namespace}/{name}"):
            writer = BlobWriter(self, None, workers=self.workers)
            try:
                info.chunks, _, _ = writer.store_stream(
                    io.BytesIO(content), chunk_size or self.chunk_size, NO_PROGRESS, sha256=False
                )
                writer.finish()
            finally:
                writer.close()
            payload = {
                "namespace": namespace,
                "name": name,
                "size": info.size,
                "digest": info.digest,
                "chunks": info.chunks,
                "time": info.time.isoformat(),
                "labels": info.labels,
            }
            try:
                self.storage.put(object_name, encode_framed(REF_MAGIC, payload, self.keyring.mac))
            except AlreadyExistsError:
                return self._same_or_conflict(self.get_ref(namespace, name), info)
            return info

    def _existing_ref(self, namespace: str, name: str) -> RefInfo | None:
        try:
            return self.get_ref(namespace, name)
        except NotFoundError:
            return None

    @staticmethod
    def _same_or_conflict(existing: RefInfo, new: RefInfo) -> RefInfo:
        if existing.digest == new.digest and existing.size == new.size:
            return existing
        raise AlreadyExistsError(
            f"{existing.namespace}/{existing.name} is already stored with different content",
            hint="the repository never overwrites; investigate why the same name carries other bytes",
            exit_code=1,
        )

    def iter_ref(self, ref: RefInfo) -> Iterator[bytes]:
        """The ref's content chunk by chunk; the whole-content digest is checked at the end."""
        digest = self.keyring.digest()
        for chunk_id in ref.chunks:
            data = self.read_blob(chunk_id)
            digest.update(data)
            yield data
        if digest.hexdigest() != ref.digest:
            raise IntegrityError(f"{ref.namespace}/{ref.name} does not match its recorded digest")

    def read_ref(self, ref: RefInfo) -> bytes:
        data = b"".join(self.read_blob(c) for c in ref.chunks)
        digest = self.keyring.digest()
        digest.update(data)
        if digest.hexdigest() != ref.digest:
            raise IntegrityError(f"{ref.namespace}/{ref.name} does not match its recorded digest")
        return data

    def delete_ref(self, namespace: str, name: str) -> None:
        self.storage.delete(ref_name(namespace, name))

    def forget_refs(self, namespace: str, names: list[str]) -> tuple[list[str], list[str]]:
        """Delete refs under the exclusive lock (as forget does); their chunks go at the next
        prune. Returns (removed, kept because Object Lock protects them)."""
        removed: list[str] = []
        locked: list[str] = []
        with RepoLock(self.storage, exclusive=True, operation="forget refs"):
            for name in names:
                try:
                    self.delete_ref(namespace, name)
                    removed.append(name)
                except LockedError:
                    locked.append(name)
        return removed, locked

    # -- records ------------------------------------------------------------------------------------

    def put_record(self, name: str, data: dict[str, Any]) -> None:
        self.storage.put(record_name(name), json.dumps(data, indent=2, sort_keys=True).encode())

    def get_record(self, name: str) -> dict[str, Any]:
        try:
            value = json.loads(self.storage.get(record_name(name)))
        except ValueError:
            raise IntegrityError(f"record {name} is damaged") from None
        if not isinstance(value, dict):
            raise IntegrityError(f"record {name} is damaged")
        return value

    def list_records(self, prefix: str = "") -> list[str]:
        base = record_name("")
        return sorted(obj.name[len(base) :] for obj in self.storage.list(record_name(prefix)))

    # -- verification and retention ------------------------------------------------------------------

    def check(
        self,
        *,
        read_data: bool = False,
        progress: ProgressSink = NO_PROGRESS,
        subset: str | None = None,
        hash_only: bool = False,
    ) -> Any:
        """Structure always; with ``read_data`` the packs (all, or part N/T of them)."""
        from lifeboat.repo.check import Subset, check_repository

        return check_repository(
            self,
            read_data=read_data,
            progress=progress,
            subset=Subset.parse(subset) if subset else None,
            hash_only=hash_only,
        )

    def forget(
        self, rules: Any, *, now: datetime | None = None, dry_run: bool = False, asset: str | None = None
    ) -> Any:
        from lifeboat.repo.retention import forget_snapshots

        return forget_snapshots(self, rules, now=now, dry_run=dry_run, asset=asset)

    def prune(self, *, dry_run: bool = False, progress: ProgressSink = NO_PROGRESS) -> Any:
        from lifeboat.repo.prune import prune_repository

        return prune_repository(self, dry_run=dry_run, progress=progress)

    def require_reader(self, what: str) -> None:
        if not self.keyring.can_read:
            raise KeyError_(
                f"{what} needs the recovery key",
                hint="pass --recovery-key FILE or --share FILE (M of N custodians)",
            )

    def keyed_hash(self, data: bytes) -> str:
        """A hash only holders of this repository's keys can compute (for fingerprints of
        secrets that have no public part)."""
        return self.keyring.mac(b"lifeboat/fingerprint/v1" + data).hex()[:32]

    def ensure_writable(self) -> None:
        """A retired backup key must not add data (keys rotate retires it)."""
        if self.key_id != "recovery" and self.storage.exists(record_name(f"keys/{self.key_id}.retired.json")):
            raise KeyError_(
                f"backup key {self.key_id} was retired by 'lifeboat keys rotate'",
                hint="use the new backup key written by the rotation",
            )

    def close(self) -> None:
        self.storage.close()


def check_recovery_key(config: dict[str, Any], key: RecoveryKey) -> None:
    if key.repo_id != config["id"] or recovery_fingerprint(key.public) != config.get(
        "recovery_fingerprint", recovery_fingerprint(_unb64(config["recovery_public"]))
    ):
        raise KeyError_(
            "the recovery key does not belong to this repository",
            hint="use the key (or shares) written by 'lifeboat init' for this repository",
        )


__all__ = ["LifeboatError", "RecordsView", "Repository"]


class RecordsView:
    """Plaintext records of a repository, readable without any key (escrow metadata)."""

    def __init__(self, storage: Storage, config: dict[str, Any] | None = None) -> None:
        self.storage = storage
        self.config = config if config is not None else Repository.read_config(storage)

    def get_record(self, name: str) -> dict[str, Any]:
        value = json.loads(self.storage.get(record_name(name)))
        if not isinstance(value, dict):
            raise IntegrityError(f"record {name} is damaged")
        return value

    def list_records(self, prefix: str = "") -> list[str]:
        base = record_name("")
        return sorted(obj.name[len(base) :] for obj in self.storage.list(record_name(prefix)))
