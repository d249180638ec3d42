"""The repository: opening, keys, blob reads, snapshots, named refs and records."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifeboat import clock
from lifeboat.crypto.envelope import unwrap_key, wrap_key
from lifeboat.crypto.keys import BackupKey, RecoveryKey, new_backup_key, recovery_fingerprint
from lifeboat.crypto.signed import DEFAULT_SKEW, ObjectType
from lifeboat.crypto.writers import Refusal, RootKey, raw_public
from lifeboat.errors import (
    AlreadyExistsError,
    ConfigError,
    IntegrityError,
    KeyError_,
    LifeboatError,
    NotFoundError,
    StorageError,
)
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo import refs
from lifeboat.repo.chunking import DEFAULT_CHUNK_SIZE
from lifeboat.repo.format import (
    CONFIG_NAME,
    FORMAT_VERSION,
    BlobLocation,
    index_name,
    pack_name,
    parse_pack_header,
    parse_pack_trailer,
    record_name,
    snapshot_name,
)
from lifeboat.repo.immutability import refuse_lying_endpoint
from lifeboat.repo.index import Index, IndexCache, index_parts, load_index, write_index
from lifeboat.repo.keyring import Keyring
from lifeboat.repo.local_cache import CacheSeal
from lifeboat.repo.model import CheckReport, ForgetReport, PruneReport, RefInfo, SnapshotInfo
from lifeboat.repo.packread import PACK_HEADER_LEN, open_blob
from lifeboat.repo.parents import ParentFile, cache_key_of
from lifeboat.repo.records import (
    RecordsView,
    put_escrow_record,
    put_key_record,
    read_config,
    retired_key_record_name,
)
from lifeboat.repo.recovery_chain import resolve_chain
from lifeboat.repo.ref_listing import ref_listing, refused_refs
from lifeboat.repo.refs import StoredRef
from lifeboat.repo.retention import KeepRules, forget_snapshots
from lifeboat.repo.sealed import SEALED_SETTING, MetadataCodec
from lifeboat.repo.snapshot_cache import SnapshotCache
from lifeboat.repo.snapshots import CachedSnapshot, SnapshotListing, cached_history, list_snapshots
from lifeboat.repo.trust import (
    SKEW_SETTING,
    Trust,
    clear_orphan_registry,
    default_writer_name,
    first_writer,
    load_trust,
    root_public_of,
    sign_statement,
    store_version,
    writer_id_keys,
)
from lifeboat.storage.base import Storage, list_names

if TYPE_CHECKING:
    from lifeboat.crypto.escrow import EscrowRecord
    from lifeboat.repo.backup import BackupSession
    from lifeboat.repo.reader import SnapshotReader
    from lifeboat.repo.repack import RepackOptions

DEFAULT_PACK_SIZE = 8 << 20
ID_KEY_CONTEXT = b"id-key"


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
        # without a cache dir, a restore still lists its WAL several times while it plans
        self.ref_memo: dict[str, Any] = {}
        self._index: Index | None = None
        self._index_lock = threading.Lock()
        self._headers: dict[str, bytes] = {}
        escrow = config.get("escrow_key")  # key material's escrow (repo/escrow.py), for messages
        keyring.escrow_threshold = int(escrow.get("threshold", 0)) if isinstance(escrow, dict) else 0
        # The Ed25519 key this handle signs snapshot headers with: the writer's (backup key
        # file) or, opened with the recovery key, the root key derived from it.
        self.signing: Ed25519PrivateKey | None = None
        # the metadata keys of the writer's earlier generations (BackupKey.earlier)
        self.earlier_metadata: dict[bytes, bytes] = {}
        self._trust: Trust | None = None
        self._trust_loaded = False
        # Opened with the recovery key: its chain (newest first) derives the root key, and the
        # shared chunk-id key goes into the key files of writers issued from here.
        self._chain: list[RecoveryKey] = []
        self._id_key: bytes | None = None
        self._codec: MetadataCodec | None = None
        self._cache_seal: CacheSeal | None = None

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
        escrow_key: Callable[[str], dict[str, Any]] | None = None,
        writer: str | None = None,
    ) -> tuple[Repository, BackupKey, RecoveryKey]:
        """A new repository on ``storage`` and its backup and recovery keys; ``escrow_key``
        gives the public escrow key (for key material) of the new repository id, bound in config.

        The repository's root key (derived from the recovery key) signs the first writer
        registry version, and the backup key returned is the first writer's key (``writer``,
        default this host's name), allowed every asset (repo/trust.py)."""
        if storage.exists(CONFIG_NAME):
            raise AlreadyExistsError(
                f"a repository already exists at {storage.url}",
                hint="use it with its existing keys, or choose another location",
            )
        refuse_lying_endpoint(storage)
        repo_id = secrets.token_hex(16)
        recovery = RecoveryKey.generate(repo_id)
        id_key = secrets.token_bytes(32)
        root = RootKey.derive(repo_id, recovery.secret, recovery.public)
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
            "root_public": _b64(root.public),
            SKEW_SETTING: DEFAULT_SKEW.total_seconds(),
            SEALED_SETTING: True,  # index files must be sealed and signed (repo/sealed.py)
        }
        if escrow_key is not None:
            config["escrow_key"] = escrow_key(repo_id)
        backup_key, registry = first_writer(
            root, new_backup_key(repo_id, recovery.public, id_key), writer or default_writer_name()
        )
        # The registry before the config: a config naming a root always has its registry.
        clear_orphan_registry(storage)
        store_version(storage, registry, 1)
        storage.put(CONFIG_NAME, json.dumps(config, indent=2).encode())
        repo = cls(storage, config, Keyring.for_backup(backup_key), backup_key.key_id, cache_dir)
        repo.signing = backup_key.signing
        put_key_record(repo, backup_key)
        return repo, backup_key, recovery

    @staticmethod
    def read_config(storage: Storage) -> dict[str, Any]:
        """The repository's plaintext config (id, public key, sizes)."""
        return read_config(storage)

    @classmethod
    def open(
        cls,
        storage: Storage,
        *,
        backup_key: BackupKey | None = None,
        recovery_key: RecoveryKey | None = None,
        cache_dir: Path | None = None,
    ) -> Repository:
        """The repository on ``storage``, opened with a backup key or a recovery key."""
        config = cls.read_config(storage)
        if recovery_key is not None:
            chain = resolve_chain(RecordsView(storage, config), recovery_key)
            check_recovery_key(config, chain[-1])
            try:
                id_key = unwrap_key(chain[-1].private, _unb64(config["id_key_wrapped"]), ID_KEY_CONTEXT)
            except IntegrityError:
                raise KeyError_("the recovery key does not open this repository") from None
            check_root_public(config, chain)
            # Data written with the recovery key is wrapped for the newest key, never a retired one.
            keyring = Keyring(
                config["id"],
                id_key,
                recovery_key.public,
                recovery_key,
                older=chain[1:],
                chunk_id_key=backup_key.chunk_id_key if backup_key is not None else None,
            )
            key_id = backup_key.key_id if backup_key is not None else "recovery"
            repo = cls(storage, config, keyring, key_id, cache_dir)
            repo._chain, repo._id_key = list(chain), id_key
            keyring.add_id_keys(repo._writer_id_keys)  # every writer's blob ids, loaded when met
            repo.signing = backup_key.signing if backup_key is not None else None
            if repo.signing is None and root_public_of(config) is not None:
                repo.signing = RootKey.from_chain(config["id"], chain).signing
            elif repo.signing is not None and root_public_of(config) is not None:
                try:
                    repo.trust()  # a revoked writer key file: the root key signs instead
                except IntegrityError:
                    pass  # a broken registry: `check` reports it; nothing is judged by it here
            return repo
        if backup_key is None:
            raise KeyError_("opening the repository needs a backup key or the recovery key")
        if backup_key.repo_id != config["id"]:
            raise KeyError_(
                f"backup key belongs to repository {backup_key.repo_id[:12]}, not {config['id'][:12]}",
                hint="check [repository] keyfile in the policy",
            )
        repo = cls(storage, config, Keyring.for_backup(backup_key), backup_key.key_id, cache_dir)
        repo.signing = backup_key.signing
        repo.earlier_metadata = dict(backup_key.earlier)
        return repo

    # -- writers (repo/trust.py) -----------------------------------------------------------

    def trust(self, refresh: bool = False) -> Trust | None:
        """The verified writer registry and time rule (None: an unsigned legacy repository).
        IntegrityError when the registry is broken, rolled back or forked."""
        if not self._trust_loaded or refresh:
            self._trust = load_trust(self.storage, self.config, self.cache_dir)
            self._trust_loaded = True
            self._sign_as_root_unless_authorised()
        return self._trust

    def _sign_as_root_unless_authorised(self) -> None:
        """On the recovery side, a writer key the registry no longer authorises (revoked,
        rotated away, unknown) never signs: what it signed now (a prune's or consolidation's
        index file listing every writer's packs, audit copies) would be refused by every
        reader. The root key, which this handle holds, signs instead."""
        if not self._chain or self._trust is None or self.signing is None:
            return
        public = raw_public(self.signing)
        if public == self._trust.registry.root_public:
            return
        if not self._trust.registry.authorises(public, None, clock.now()):
            self.signing = RootKey.from_chain(self.id, self._chain).signing

    def root_key(self) -> RootKey:
        """The repository's root signing key (needs the recovery key or shares)."""
        self.require_reader("signing the writer registry")
        if self.legacy:
            raise KeyError_(
                "this repository predates writer identities (no writer registry)",
                hint="create a new repository with 'lifeboat init' to use writer keys",
            )
        root = RootKey.from_chain(self.id, self._chain)
        if root.public != root_public_of(self.config):
            raise KeyError_("the recovery key does not derive this repository's root key")
        return root

    def _writer_id_keys(self) -> list[bytes]:
        """Every writer's chunk-id key from the verified registry (recovery side); none when
        the registry cannot be trusted (its blobs then fail their id check, and ``check``
        reports the registry itself)."""
        try:
            trust = self.trust()
        except IntegrityError:
            return []
        return writer_id_keys(trust.registry, self._chain) if trust is not None else []

    def writer_material(self) -> tuple[bytes, bytes]:
        """(recovery public key, chunk-id key) a new writer's key file holds."""
        if self._id_key is None:
            self.require_reader("issuing a writer key")
        assert self._id_key is not None
        return self.keyring.recipient_public, self._id_key

    @property
    def legacy(self) -> bool:
        """A repository from before writer identities (its snapshots are not verified)."""
        return root_public_of(self.config) is None

    def require_writer_for(self, asset: str) -> None:
        """Refuse up front a backup whose snapshot every reader would refuse (this key's
        writer is revoked or not allowed ``asset``): one clear line instead of a snapshot
        that only `check` and `status` would name. Readers enforce it regardless."""
        trust = self.trust() if not self.legacy and self.signing is not None else None
        if trust is None or self.signing is None:
            return
        raw = raw_public(self.signing)
        if raw == trust.registry.root_public:
            return
        verdict = trust.registry.authorises(raw, asset, clock.now())
        if not verdict:
            raise KeyError_(
                f"writer {verdict.writer or 'of this key'} cannot back up {asset}: {verdict.reason}",
                hint=(
                    "this key was rotated or revoked: use the writer's newest key file"
                    if verdict.refusal is Refusal.REVOKED
                    else "issue a key for it with 'lifeboat keys add-writer NAME --assets ...'"
                ),
            )

    def sign_snapshot(self, snapshot_id: str, asset: str, body: bytes) -> bytes:
        """The signature trailer of a snapshot header (empty in a legacy repository)."""
        if self.legacy:
            return b""
        if self.signing is None:
            raise KeyError_(
                "this backup key has no writer identity, and this repository accepts only signed snapshots",
                hint="issue a writer key with 'lifeboat keys add-writer NAME --assets A,B --out FILE'",
            )
        return sign_statement(
            self.signing, self.id, ObjectType.SNAPSHOT, snapshot_name(snapshot_id), asset, body
        )

    @property
    def metadata(self) -> MetadataCodec:
        """How this handle seals, signs and opens snapshot headers and index files
        (repo/sealed.py): with its signing key, and the recovery chain when it holds it."""
        codec = self._codec
        if codec is None or codec.signing is not self.signing:
            codec = self._codec = MetadataCodec(
                self.id,
                self.keyring.mac,
                signing=self.signing,
                recovery_public=self.keyring.recipient_public,
                recovery=[key.private for key in self._chain],
                seal=not self.legacy,
                require_signed_indexes=self.config.get(SEALED_SETTING) is True,
                earlier=self.earlier_metadata,
            )
        return codec

    def sign_object(self, obj_type: ObjectType, name: str, asset: str | None, body: bytes) -> bytes:
        """The signature trailer of a ref or WAL object (empty in a legacy repository)."""
        if self.legacy:
            return b""
        if self.signing is None:
            raise KeyError_(
                "this backup key has no writer identity, and this repository accepts only signed objects",
                hint="issue a writer key with 'lifeboat keys add-writer NAME --assets A,B --out FILE'",
            )
        return sign_statement(self.signing, self.id, obj_type, name, asset, body)

    # -- index ------------------------------------------------------------------------------

    def index(self, refresh: bool = False) -> Index:
        """The index of packs and blobs this handle may use, loaded once (``refresh``
        reloads): refused index files are left out, other writers' are sealed to a writer."""
        with self._index_lock:
            if self._index is None or refresh:
                self._index = None  # not two held at once while the new one loads
                self._index = load_index(self.storage, self.metadata, self.index_cache, self.trust())
            return self._index

    def release_index(self) -> None:
        """Lets go of the loaded index, for work that no longer needs it (prune's repack):
        the next ``index()`` loads it again; its memory is freed once no caller holds it."""
        with self._index_lock:
            self._index = None

    def load_index_for_writing(self) -> Index:
        """The index, minus packs that vanished, plus complete orphan packs of killed runs."""
        index = self.index(refresh=True)
        # names alone: a local repository stats no pack (~4 µs each, every backup)
        stored = {name.rsplit("/", 1)[-1] for name in list_names(self.storage, "data/")}
        index.drop_packs([p for p in list(index.packs()) if p not in stored])
        if index.sealed:
            # Other keys' index files list packs this key cannot see: every pack would look
            # like an orphan, and adopting them would fetch them all. Orphans of killed runs
            # are then left to prune (their data is stored again, once).
            return index
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
                blobs = self.pack_table(data)
            except IntegrityError:
                continue  # another writer's (its table opens only for it) or damaged
            entry = {"id": pack_id, "blobs": [list(b) for b in blobs]}
            index.add_pack(entry)
            recovered.append(entry)
        # each file written is one of the index's files, so that prune deleting an adopted
        # pack nobody needs (a killed backup's) deletes the file listing it too
        for part in index_parts(recovered):
            for index_id, count in write_index(self.storage, part, self.metadata, self.index_cache).items():
                index.files[index_name(index_id)] = [p["id"] for p in part]
                index.file_blobs[index_name(index_id)] = count
        return index

    # -- reading blobs ------------------------------------------------------------------------

    def pack_table(self, pack: bytes) -> list[tuple[str, str, int, int, int]]:
        """A whole pack's blob table (a sealed one opens for its writer and the recovery
        side; IntegrityError for anyone else)."""
        return parse_pack_trailer(pack, self.metadata.open_table)

    def _pack_header(self, pack_id: str) -> bytes:
        header = self._headers.get(pack_id)
        if header is None:
            raw = self.storage.get(pack_name(pack_id), 0, PACK_HEADER_LEN)
            header, _ = parse_pack_header(raw)  # read_blob names the pack in any error
            self._headers[pack_id] = header
        return header

    def _open_blob_at(self, blob_id: str, loc: BlobLocation) -> bytes:
        return open_blob(
            self.keyring,
            blob_id,
            loc,
            lambda: self._pack_header(loc.pack),
            lambda: self.storage.get(pack_name(loc.pack), loc.offset, loc.length),
        )

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
        index = self.index()
        first_error: IntegrityError | StorageError | None = None
        for where in index.locations(blob_id) or [loc]:
            try:
                data = self._open_blob_at(blob_id, where)
            except (IntegrityError, StorageError) as exc:
                # Another location may hold the genuine bytes: a misdirecting index file can
                # name a missing pack or a range past a pack's end (S3 answers 416).
                first_error = first_error or exc
                index.demote(blob_id, where)
                continue
            return data
        assert first_error is not None
        raise first_error

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
        recipient: str | None = None,
    ) -> BackupSession:
        """``file_sha256=False`` records no whole-file SHA-256: the ordered chunk ids (keyed
        BLAKE3, checked on every read) already pin each file's content, and hashing every
        byte a second time is a fifth of a large database backup's CPU. ``recipient``: who
        can open the packs, "recovery" or "escrow" (default: by ``kind``, repo/escrow.py)."""
        from lifeboat.repo.backup import BackupSession  # here: status, listings and WAL need none
        from lifeboat.repo.escrow import escrowed_keyring, recipient_for

        self.require_writer_for(asset)
        escrowed = (recipient or recipient_for(kind)) == "escrow"
        keyring = escrowed_keyring(self.config, self.keyring, self) if escrowed else None
        return BackupSession(
            self,
            asset=asset,
            kind=kind,
            labels=labels,
            chunk_size=chunk_size,
            progress=progress,
            host=host,
            use_parent_cache=use_parent_cache,
            # Key material: one parent cache per escrow key. After `keys rotate --escrow`
            # the files are read again and sealed to the new key: reusing chunks sealed to
            # the old one would leave them where the new shares cannot open them.
            parent_scope=f"escrow-ids:{keyring.escrow_id_salt.hex()}" if keyring is not None else "",
            file_sha256=file_sha256,
            keyring=keyring,
        )

    def parent_cache(self, asset: str, scope: str = "") -> ParentFile | None:
        """An asset's parent-snapshot cache: where it lives and its MAC key (None without a
        cache dir). A ``scope`` (an escrow key's, for key material) is a cache of its own,
        its lines MAC'd apart (one written under another scope is refused, not used) and the
        file sealed (its entries name a plain SHA-256 of each key file)."""
        if self.cache_dir is None:
            return None
        name = f"{asset}\0{scope}" if scope else asset
        path = self.cache_dir / "parents" / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.json.zst"
        # sealed under the asset's key, not the scope's: a cache of another scope still
        # opens, and each of its lines is then refused by its MAC (and counted)
        seal_key = cache_key_of(self.keyring.mac, asset) if scope else None
        return ParentFile(path, cache_key_of(self.keyring.mac, name), seal_key)

    @property
    def cache_seal(self) -> CacheSeal:
        """How this handle tags the cache files it keeps in the state dir (repo/local_cache.py)."""
        if self._cache_seal is None:
            self._cache_seal = CacheSeal(self.keyring.mac)
        return self._cache_seal

    @property
    def index_cache(self) -> IndexCache:
        """The local copies of index files (repo/index.py ``IndexCache``)."""
        return IndexCache(self.cache_dir / "index" if self.cache_dir else None, self.cache_seal)

    def snapshot_cache(self) -> SnapshotCache:
        """Verified snapshot headers of this repository, kept locally (repo/snapshot_cache.py)."""
        return SnapshotCache(self.cache_dir, self.cache_seal)

    def snapshot_listing(self, *, use_cache: bool = True, assets: Sequence[str] = ()) -> SnapshotListing:
        """Every snapshot judged (the one reader function, repo/snapshots.py): accepted ones
        (oldest first), refused ones with their writer and reason, damaged ones, and those
        sealed by other writers (``assets``: the ones to recognise in their signatures)."""
        cache = self.snapshot_cache() if use_cache else None
        return list_snapshots(self.storage, self.metadata, self.trust(), cache=cache, assets=assets)

    def snapshots(self, asset: str | None = None) -> list[SnapshotInfo]:
        """The accepted snapshots (of ``asset``, or all), oldest first: refused ones (unsigned,
        an unauthorised or revoked writer, dated in the future) are never among them."""
        good = self.snapshot_listing().accepted
        return [s for s in good if asset is None or s.asset == asset]

    def snapshots_and_damaged(self, asset: str | None = None) -> tuple[list[SnapshotInfo], dict[str, str]]:
        """Accepted snapshots and the damaged ones (object name -> problem). A damaged
        snapshot's asset is unknown, so ``asset`` filters only the readable ones."""
        listing = self.snapshot_listing()
        return [s for s in listing.accepted if asset is None or s.asset == asset], listing.damaged

    def _newest_first(
        self, asset: str | None, prefix: str = "", at: datetime | None = None
    ) -> Iterator[SnapshotInfo | CachedSnapshot]:
        """The asset's accepted snapshots, newest first, whose id starts with ``prefix`` and
        (with ``at``) taken at or before it: from the local cache alone when it covers the
        listing (choosing one of thousands then judges and decodes one header), else all read."""
        cached = cached_history(self.storage, self.metadata, self.snapshot_cache(), self.trust(), asset)
        if cached is not None:
            return cached.newest_first(prefix, at)
        return (
            s
            for s in reversed(self.snapshots(asset))
            if s.id.startswith(prefix) and (at is None or s.time <= at)
        )

    def _full(self, snapshot: SnapshotInfo | CachedSnapshot) -> SnapshotInfo:
        if isinstance(snapshot, CachedSnapshot):
            return snapshot.info(self.storage, self.metadata)
        return snapshot

    def _first_intact(
        self, asset: str | None, candidates: Iterator[SnapshotInfo | CachedSnapshot]
    ) -> SnapshotInfo | None:
        """The first of ``candidates`` whose header is still there and still hashes to its
        name. One chosen from the cache's summary may have been rewritten or forgotten since
        it was verified: a local choice lists the headers the summary holds by name alone
        (repo/snapshots.py ``listed_headers``). It is passed over, as the full listing
        leaves a damaged header out; every other error (a header this key cannot open) is
        raised. IntegrityError when every candidate was passed over: none is said to be
        missing when all are damaged."""
        passed_over = 0
        for candidate in candidates:
            if isinstance(candidate, SnapshotInfo):
                return candidate
            info = candidate.info_if_intact(self.storage, self.metadata)
            if info is not None:
                return info
            passed_over += 1
        if passed_over:
            raise IntegrityError(
                f"every one of the {passed_over} snapshot(s) of {asset or 'the repository'} to choose "
                "from is damaged or gone since this host verified it",
                hint="'lifeboat check' lists every damaged snapshot",
            )
        return None

    def latest_snapshot_id(self, asset: str) -> str | None:
        """The asset's newest snapshot id, if any (a new snapshot's ``parent``, which nothing
        reads back: its header is not read here)."""
        return next((s.id for s in self._newest_first(asset)), None)

    def find_snapshot(
        self, asset: str | None = None, *, snapshot_id: str | None = None, at: datetime | None = None
    ) -> SnapshotInfo:
        """One snapshot by id prefix (its header damaged: IntegrityError), or the newest
        intact one (at or before ``at``)."""
        if snapshot_id:
            matches = list(self._newest_first(asset, prefix=snapshot_id))
            if not matches:
                self._refuse_by_id(snapshot_id)
                raise NotFoundError(f"no snapshot {snapshot_id}" + (f" of asset {asset}" if asset else ""))
            if len(matches) > 1:
                raise ConfigError(f"snapshot id {snapshot_id} is ambiguous; give more characters")
            return self._full(matches[0])
        if at is not None:
            if at.tzinfo is None:
                at = at.astimezone(UTC)
            chosen = self._first_intact(asset, self._newest_first(asset, at=at))
            if chosen is None:
                every = list(self._newest_first(asset))
                oldest = every[-1].time.isoformat(timespec="seconds") if every else "none"
                raise NotFoundError(
                    f"no snapshot of {asset} at or before {at.isoformat(timespec='seconds')}",
                    hint=f"the oldest snapshot is from {oldest}",
                )
            return chosen
        newest = self._first_intact(asset, self._newest_first(asset))
        if newest is None:
            damaged = len(self.snapshot_listing().damaged)  # whose asset cannot be told
            if damaged:
                raise NotFoundError(
                    f"asset {asset} has no snapshot that can be read, and {damaged} snapshot header(s) "
                    "of the repository are damaged",
                    hint=f"'lifeboat check' lists them ('lifeboat backup {asset}' if it never was)",
                )
            raise NotFoundError(f"asset {asset} has no snapshots yet", hint=f"run 'lifeboat backup {asset}'")
        return newest

    def _refuse_by_id(self, snapshot_id: str) -> None:
        """A refused or damaged snapshot asked for by id: say why it cannot be had, not that it
        is absent."""
        listing = self.snapshot_listing()
        refused = [r.describe() for r in listing.refused if r.id.startswith(snapshot_id)]
        damaged = [
            why
            for name, why in listing.damaged.items()
            if name.startswith(snapshot_name(snapshot_id)) and "/" not in name[len(snapshot_name("")) :]
        ]
        if len(refused) + len(damaged) == 1:
            raise IntegrityError(
                [*refused, *damaged][0], hint="'lifeboat check' lists every refused or damaged snapshot"
            )

    def reader(self, info: SnapshotInfo | str) -> SnapshotReader:
        """A reader for the snapshot (needs the recovery key)."""
        if isinstance(info, str):
            info = self.find_snapshot(snapshot_id=info)
        if not self.keyring.can_read:
            self.keyring.pack_cipher(b"")  # raises the one-line "needs the recovery key" error
        from lifeboat.repo.reader import SnapshotReader  # here: only restores and checks read trees

        return SnapshotReader(self, info)

    # -- named refs (repo/refs.py) ---------------------------------------------------------------

    def get_ref(self, namespace: str, name: str) -> RefInfo:
        """The named ref, signed by a writer allowed its asset (NotFoundError when absent
        or when only unauthorised objects hold the name)."""
        return refs.get_ref(self, namespace, name)

    def list_refs(self, namespace: str) -> list[RefInfo]:
        """Every authorised ref in ``namespace``, by name."""
        chosen = ref_listing(self, namespace).chosen
        return [chosen[name] for name in sorted(chosen)]

    def list_ref_names(self, namespace: str) -> list[str]:
        """The names in ``namespace`` that hold an authorised ref (verdicts cached locally)."""
        return sorted(ref_listing(self, namespace).chosen)

    def refused_refs(self) -> list[StoredRef]:
        """Every stored ref object no reader uses (unsigned, forged, out of its writer's
        assets, revoked, damaged), for ``status``; ``check`` reports them too."""
        return refused_refs(self)

    def put_ref(
        self,
        namespace: str,
        name: str,
        data: bytes | BinaryIO,
        labels: dict[str, str] | None = None,
        chunk_size: int | None = None,
    ) -> RefInfo:
        """Store a named stream once. Same content again: no-op; different: AlreadyExistsError."""
        return refs.put_ref(self, namespace, name, data, labels, chunk_size)

    def iter_ref(self, ref: RefInfo) -> Iterator[bytes]:
        """The ref's content chunk by chunk; the whole-content digest is checked at the end."""
        return refs.iter_ref(self, ref)

    def read_ref(self, ref: RefInfo) -> bytes:
        """A ref's whole content, verified (needs the recovery key)."""
        return refs.read_ref(self, ref)

    def delete_ref(self, namespace: str, name: str) -> None:
        """Deletes a ref (its chunks go at the next prune)."""
        refs.delete_ref(self, namespace, name)

    def forget_refs(self, namespace: str, names: list[str]) -> tuple[list[str], list[str]]:
        """Deletes refs under the exclusive lock; returns (removed, kept by Object Lock)."""
        return refs.forget_refs(self, namespace, names)

    # -- records ------------------------------------------------------------------------------------

    def put_record(self, name: str, data: dict[str, Any]) -> None:
        """Writes a plaintext record (non-secret JSON)."""
        self.storage.put(record_name(name), json.dumps(data, indent=2, sort_keys=True).encode())

    def get_record(self, name: str) -> dict[str, Any]:
        """A plaintext record (NotFoundError, IntegrityError when damaged)."""
        return RecordsView(self.storage, self.config).get_record(name)

    def list_records(self, prefix: str = "") -> list[str]:
        """The names of the records under ``prefix``."""
        return RecordsView(self.storage, self.config).list_records(prefix)

    def put_escrow(self, record: EscrowRecord) -> None:
        """Records an escrow split (``crypto.escrow.EscrowStore``)."""
        put_escrow_record(self, record)

    # -- verification and retention ------------------------------------------------------------------

    def check(
        self,
        *,
        read_data: bool = False,
        progress: ProgressSink = NO_PROGRESS,
        subset: str | None = None,
        hash_only: bool = False,
    ) -> CheckReport:
        """Structure always; with ``read_data`` the packs (all, or part N/T of them)."""
        from lifeboat.repo.check import Subset, check_repository  # imported when used: light start-up

        return check_repository(
            self,
            read_data=read_data,
            progress=progress,
            subset=Subset.parse(subset) if subset else None,
            hash_only=hash_only,
        )

    def forget(
        self,
        rules: Callable[[str], KeepRules] | KeepRules,
        *,
        now: datetime | None = None,
        dry_run: bool = False,
        asset: str | None = None,
    ) -> ForgetReport:
        """Removes the snapshots no retention rule keeps (``rules``: per asset, or one for all)."""
        return forget_snapshots(self, rules, now=now, dry_run=dry_run, asset=asset)

    def prune(
        self,
        *,
        dry_run: bool = False,
        progress: ProgressSink = NO_PROGRESS,
        repack: RepackOptions | None = None,
    ) -> PruneReport:
        """Deletes packs no snapshot or ref needs any more and repacks small or mostly unused
        ones (``repack``: None for the defaults); needs the recovery key."""
        from lifeboat.repo.prune import prune_repository  # imported when used: light start-up

        return prune_repository(self, dry_run=dry_run, progress=progress, repack_options=repack)

    def require_reader(self, what: str) -> None:
        """Raises the one-line "needs the recovery key" error for a write-only handle."""
        if not self.keyring.can_read:
            raise KeyError_(
                f"{what} needs the recovery key",
                hint="pass --recovery-key FILE or --share FILE (M of N custodians)",
            )

    def keyed_hash(self, data: bytes) -> str:
        """A hash only holders of this repository's keys can compute (for fingerprints of
        secrets that have no public part)."""
        return self.keyring.fingerprint_hash(data)

    def ensure_writable(self) -> None:
        """A retired backup key must not add data (keys rotate retires it), and in a
        repository with writer identities a key without one signs nothing readers accept."""
        if not self.legacy and self.signing is None:
            self.sign_snapshot("", "", b"")  # raises the one-line "no writer identity" error
        retired = record_name(retired_key_record_name(self.key_id))
        if self.key_id != "recovery" and self.storage.exists(retired):
            raise KeyError_(
                f"backup key {self.key_id} was retired by 'lifeboat keys rotate'",
                hint="use the new backup key written by the rotation",
            )

    def close(self) -> None:
        """Closes the storage."""
        self.storage.close()


def check_root_public(config: dict[str, Any], chain: list[RecoveryKey]) -> None:
    """Raises when the config's pinned root key is not the one the recovery chain derives.
    The config is plaintext in storage: a backup host with storage credentials could
    replace it, and the registry, with a root of its own, which a host without a registry
    checkpoint (a fresh disaster-recovery host) would otherwise trust."""
    pinned = root_public_of(config)
    if pinned is not None and RootKey.from_chain(config["id"], chain).public != pinned:
        raise IntegrityError(
            "the repository config names a root key the recovery key does not derive: "
            "the config was replaced",
            hint="restore the config from a copy; run 'lifeboat check' from a host that kept its state",
        )


def check_recovery_key(config: dict[str, Any], key: RecoveryKey) -> None:
    """Raises when ``key`` is not this repository's recovery key."""
    if key.repo_id != config["id"] or recovery_fingerprint(key.public) != config.get(
        "recovery_fingerprint", recovery_fingerprint(_unb64(config["recovery_public"]))
    ):
        raise KeyError_(
            "the recovery key does not belong to this repository",
            hint="use the key (or shares) written by 'lifeboat init' for this repository",
        )


__all__ = ["LifeboatError", "RecordsView", "Repository"]
