"""Snapshot headers: encoding, decoding and listing, and the one listing every reader uses.

A header is stored as its MAC'd framed bytes followed, in a repository with writer
identities, by the writer's 101-byte signature trailer (crypto/signed.py). The snapshot id
is the SHA-256 of the bytes *before* the trailer (the signed statement covers the name, so
the name cannot cover the signature); one object, one PUT, so no header is ever visible
without its signature. ``list_snapshots`` sorts every listed header into accepted, refused
(with the writer and the reason) and damaged: ``snapshots``, ``restore``, ``check``,
``forget``, ``status``, drills and the daemon all go through it (via ``Repository``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

import blake3

from lifeboat import clock, memory
from lifeboat.crypto.signed import ObjectType
from lifeboat.crypto.writers import ANY_ASSET, Refusal
from lifeboat.errors import IntegrityError, NotFoundError
from lifeboat.repo.format import SNAPSHOT_MAGIC, object_ids_valid, snapshot_name
from lifeboat.repo.model import SnapshotInfo, SnapshotStats
from lifeboat.repo.sealed import MetadataCodec, Unopened, split_signed
from lifeboat.repo.snapshot_cache import STATS_FIELDS, UNOPENED_FIELDS, SnapshotCache, summary_row
from lifeboat.repo.trust import SignatureCheck, Trust, Verdict
from lifeboat.storage.base import ObjectStat, Storage, list_names, write_times_trusted

NAMESPACE = "snapshots/"
LOAD_BATCH = 64  # at most this many headers read by one task of the listing's pool


def snapshot_payload(info: SnapshotInfo) -> dict[str, Any]:
    """A snapshot header's stored fields (``tree_format`` only when not the original 1, so
    single-document headers stay byte for byte what older versions wrote)."""
    payload: dict[str, Any] = {
        "asset": info.asset,
        "kind": info.kind,
        "time": info.time.isoformat(),
        "host": info.host,
        "labels": info.labels,
        "stats": asdict(info.stats),
        "tree": info.tree,
        "key_id": info.key_id,
        "parent": info.parent,
    }
    if info.tree_format != 1:
        payload["tree_format"] = info.tree_format
    return payload


def encode_snapshot(info: SnapshotInfo, codec: MetadataCodec) -> tuple[str, bytes]:
    """A snapshot's id and its stored header bytes: sealed and signed by this handle's
    writer (repo/sealed.py), or MAC'd plaintext in a legacy repository."""
    return codec.encode(ObjectType.SNAPSHOT, NAMESPACE, SNAPSHOT_MAGIC, snapshot_payload(info), info.asset)


def _asset_of(payload: dict[str, Any]) -> str | None:
    asset = payload.get("asset")
    return asset if isinstance(asset, str) else None


def decode_signed_snapshot(
    snapshot_id: str, data: bytes, codec: MetadataCodec
) -> tuple[SnapshotInfo, SignatureCheck] | Unopened:
    """The snapshot from its stored bytes and what its trailer proves, or ``Unopened``
    (another writer's sealed header, or an unsigned one). IntegrityError when damaged,
    renamed or of a layout this version cannot read."""
    result = _decode(snapshot_id, data, codec)
    return result if isinstance(result, Unopened) else result[:2]


def _decode(
    snapshot_id: str, data: bytes, codec: MetadataCodec
) -> tuple[SnapshotInfo, SignatureCheck, bool] | Unopened:
    """``decode_signed_snapshot``, and whether the header was sealed."""
    what = f"snapshot {snapshot_id[:12]}"
    opened = codec.decode(ObjectType.SNAPSHOT, NAMESPACE, SNAPSHOT_MAGIC, snapshot_id, data, _asset_of, what)
    if isinstance(opened, Unopened):
        return opened
    return snapshot_from_payload(snapshot_id, opened.payload), opened.check, opened.sealed


def _opens(codec: MetadataCodec, check: SignatureCheck, sealed: bool) -> bool:
    """Whether this handle could open a header it finds in the local cache: the cache is
    shared by the host's writer-side and recovery-side commands, and a writer key shows
    only what it opens itself (its own sealed headers, earlier generations' included, or
    plaintext ones)."""
    return codec.reads_all or not sealed or codec.owns(check.signer)


def decode_snapshot(snapshot_id: str, data: bytes, codec: MetadataCodec) -> SnapshotInfo:
    """The snapshot from its header bytes (IntegrityError when damaged, renamed, or not
    readable with this handle's keys)."""
    result = decode_signed_snapshot(snapshot_id, data, codec)
    if isinstance(result, Unopened):
        raise IntegrityError(
            f"snapshot {snapshot_id[:12]} is sealed for another writer",
            hint="read it with the recovery key, or on the host that wrote it",
        )
    return result[0]


@dataclass(frozen=True)
class RefusedSnapshot:
    """A header no reader may use, and who wrote it (as far as is known). ``asset`` and
    ``time`` are None for a sealed header no key opens (unsigned: the sealer is unknown)."""

    id: str
    asset: str | None
    time: datetime | None
    writer: str | None
    reason: str
    # the opened header (None: nothing opened it): prune keeps what it references, since a
    # genuine snapshot may be refused (a clock running ahead, `revoke-writer --since`)
    held: SnapshotInfo | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        """One line for ``check``, ``status`` and ``snapshots``."""
        who = self.writer or "an unknown writer"
        if self.reason == "signature does not match" and self.writer:
            who = f"a writer claiming to be {self.writer}"
        if self.time is None:
            of = f" of {self.asset}" if self.asset else ""
            return f"sealed snapshot {self.id[:12]}{of} by {who} refused: {self.reason}"
        return (
            f"snapshot {self.id[:12]} of {self.asset} dated {self.time.isoformat(timespec='seconds')} "
            f"by {who} refused: {self.reason}"
        )


@dataclass
class SnapshotListing:
    """Every listed snapshot header, sorted: accepted (oldest first), refused, damaged, and
    (read with a writer key) those sealed by other writers, which this key cannot open."""

    accepted: list[SnapshotInfo] = field(default_factory=list)
    refused: list[RefusedSnapshot] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)  # object name -> problem
    sealed: dict[str, str | None] = field(default_factory=dict)  # snapshot id -> its writer's name

    def sealed_summary(self) -> str | None:
        """One line on the headers this key cannot open (None when there are none)."""
        if not self.sealed:
            return None
        writers = sorted({w or "unknown" for w in self.sealed.values()})
        return (
            f"{len(self.sealed)} snapshot(s) by other writers ({', '.join(writers)}) are sealed to "
            "this key: list them with the recovery key, or on their host"
        )


def _judged(
    info: SnapshotInfo, check: SignatureCheck, trust: Trust | None, mtime: float, now: datetime
) -> SnapshotInfo | RefusedSnapshot:
    if trust is None:  # a legacy repository: no writer identities to check against
        return info
    verdict: Verdict = trust.judge(
        check, info.asset, info.time, now=now, stored=trust.times.of(info.id, mtime)
    )
    if verdict:
        return info
    return RefusedSnapshot(info.id, info.asset, info.time, verdict.writer, str(verdict.reason), held=info)


def _claimed_asset(
    snapshot_id: str, unopened: Unopened, codec: MetadataCodec, trust: Trust | None, assets: Sequence[str]
) -> str | None:
    """The asset another writer's sealed header is signed for, among the writer's scope and
    ``assets`` (None: none of them)."""
    if trust is None or unopened.signer is None or unopened.refusal is not None:
        return None
    entry = trust.registry.entry_for(unopened.signer)
    scope = [a for a in entry.assets if a != ANY_ASSET] if entry is not None else []
    for asset in dict.fromkeys([*scope, *assets]):
        if unopened.claims(ObjectType.SNAPSHOT, codec.repo_id, NAMESPACE + snapshot_id, asset):
            return asset
    return None


def _judged_unopened(
    snapshot_id: str, unopened: Unopened, claimed: str | None, trust: Trust | None, stored: datetime
) -> RefusedSnapshot | str | None:
    """A header this key cannot open: refused (no signature, a signer no registry knows, an
    asset outside the writer's scope, or a writer revoked before it was stored), or the name
    of the writer whose sealed header it is (its time cannot be judged without opening it)."""
    if unopened.refusal is not None:
        return RefusedSnapshot(snapshot_id, None, None, None, unopened.refusal.value)
    entry = trust.registry.entry_for(unopened.signer) if trust is not None and unopened.signer else None
    if trust is None or entry is None:
        return RefusedSnapshot(snapshot_id, None, None, None, Refusal.UNKNOWN_WRITER.value)
    if claimed is None and ANY_ASSET not in entry.assets:
        reason = "signed for no asset this writer may write"
        return RefusedSnapshot(snapshot_id, None, None, entry.name, reason)
    verdict = trust.authorise(entry.public, claimed, None, stored)
    if not verdict:
        return RefusedSnapshot(snapshot_id, claimed, None, entry.name, str(verdict.reason))
    return entry.name


def snapshot_from_payload(snapshot_id: str, p: dict[str, Any]) -> SnapshotInfo:
    """The header's fields, checked (from a verified header, or the snapshot cache)."""
    tree = p.get("tree")
    if not isinstance(tree, list) or not object_ids_valid(tree):
        raise IntegrityError(f"snapshot {snapshot_id[:12]} is damaged (malformed tree ids)")
    tree_format = p.get("tree_format", 1)
    if not isinstance(tree_format, int) or isinstance(tree_format, bool):
        raise IntegrityError(f"snapshot {snapshot_id[:12]} is damaged (malformed tree format)")
    try:
        return SnapshotInfo(
            id=snapshot_id,
            asset=str(p["asset"]),
            kind=str(p["kind"]),
            time=datetime.fromisoformat(p["time"]),
            host=str(p["host"]),
            labels={str(k): str(v) for k, v in p["labels"].items()},
            stats=SnapshotStats(**p["stats"]),
            tree=list(p["tree"]),
            key_id=str(p["key_id"]),
            parent=p.get("parent"),
            tree_format=tree_format,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise IntegrityError(f"snapshot {snapshot_id[:12]} is damaged") from None


# what list_snapshots finds of one listed header: opened (its fields and signature check),
# sealed by another writer (and the asset it claims), damaged (why), or gone meanwhile
Loaded = tuple[SnapshotInfo, SignatureCheck] | tuple[Unopened, str | None] | str | None


class _Missing:
    """A listed header the local cache does not answer for: it is read from the storage."""


_MISSING = _Missing()


def list_snapshots(
    storage: Storage,
    codec: MetadataCodec,
    trust: Trust | None,
    workers: int = 8,
    cache: SnapshotCache | None = None,
    assets: Sequence[str] = (),
    *,
    reread: bool = False,
) -> SnapshotListing:
    """Every listed snapshot header judged: accepted, refused (writer and reason), damaged,
    and sealed by another writer (a writer key opens only its own; such a header's claimed
    asset is found among ``assets`` and the writer's scope from its signature alone, so one
    claiming an asset outside its writer's scope is refused without opening it).
    With ``cache``, a header verified before and listed with the same size and time is
    taken from it (repo/snapshot_cache.py); its signature check is cached with it, the
    registry and the time rule are applied afresh on every listing. With ``reread``
    (`check`), every header is read from the storage all the same, and only one whose
    bytes are those this side (writer key or recovery key) verified before is taken from
    the cache (a BLAKE3 of the whole object, trailer included, kept per side): damage is
    still seen, the signature is verified once, and the recovery side's check never leans
    on what only a writer key opened."""
    with memory.collection_paused():  # see _judged_listing
        cached = cache.load() if cache is not None else {}
    # a listing tells a header changed since it was verified by its size and time, so it
    # stats them; `check` reads every header's bytes, and a local one it knows is judged by
    # the time it had when verified (listed_headers)
    stats = listed_headers(storage, cached) if reread else storage.list(NAMESPACE)
    listed = {obj.name: obj for obj in stats}
    names = list(listed)
    fresh: dict[str, list[Any]] = {}
    learnt: list[str] = []  # headers this side verified for the first time: the cache is saved
    side = "recovery" if codec.reads_all else "writer"
    checks: dict[tuple[str, ...], SignatureCheck | None] = {}  # a writer's entries share one form

    def from_cache(name: str) -> Loaded | _Missing:
        """The header as the cache has it, without reading it; _MISSING when it must be read."""
        snapshot_id = name.rsplit("/", 1)[-1]
        if name != snapshot_name(snapshot_id):  # snapshots/x/ID: a copy set beside the header
            return f"{name} is not where a snapshot header is stored (snapshots/ID)"
        hit = cached.get(snapshot_id)
        if reread or not _answers(hit, listed[name], codec):
            return _MISSING
        reused = _reuse(hit, snapshot_id, codec, checks)
        if reused is None:  # damaged, or another writer's that this side does not open
            return _MISSING
        fresh[snapshot_id] = hit
        return reused

    def fetched(name: str) -> Loaded:
        """The header read from the storage (and taken from the cache when its bytes are
        those this side verified before)."""
        snapshot_id = name.rsplit("/", 1)[-1]
        stamp = [listed[name].size, listed[name].mtime]
        hit = cached.get(snapshot_id)
        try:
            data = storage.get(name)
        except NotFoundError:
            return None
        digest = blake3.blake3(data).hexdigest()
        if hit is not None and _verified_by(hit).get(side) == digest:
            reused = _reuse(hit, snapshot_id, codec, checks)
            if reused is not None:
                # the very entry when it is listed as cached: saving finds nothing to write
                fresh[snapshot_id] = hit if hit[:2] == stamp else [*stamp, *hit[2:]]
                if isinstance(reused[0], Unopened):  # the writer's scope as the registry says now
                    return reused[0], _claimed_asset(snapshot_id, reused[0], codec, trust, assets)
                return reused
        try:
            result = _decode(snapshot_id, data, codec)
        except IntegrityError as exc:
            return str(exc)
        if isinstance(result, Unopened):
            claimed = _claimed_asset(snapshot_id, result, codec, trust, assets)
            fields: list[Any] = [result.to_json(), claimed]
            returned: tuple[SnapshotInfo, SignatureCheck] | tuple[Unopened, str | None] = (result, claimed)
        else:
            info, check, sealed = result
            fields = opened_fields(info, check.to_json(), sealed)
            returned = (info, check)
        # a header both sides opened alike keeps the other side's digest: not verified again
        verified = _verified_by(hit) if hit is not None and hit[3:] == fields else {}
        verified = {k: v for k, v in verified.items() if v == digest}
        if verified.get(side) != digest:
            learnt.append(snapshot_id)
        fresh[snapshot_id] = [*stamp, verified | {side: digest}, *fields]
        return returned

    with memory.collection_paused():  # see _judged_listing
        found = [from_cache(name) for name in names]
    missing = [i for i, result in enumerate(found) if result is _MISSING]
    headers = _read_headers([names[i] for i in missing], fetched, storage, workers)
    read = dict(zip(missing, headers, strict=True))
    results = [read[i] if isinstance(result, _Missing) else result for i, result in enumerate(found)]
    listing = _judged_listing(names, results, listed, trust)
    if cache is not None and (learnt or fresh.keys() != cached.keys() or not cache.has_summary()):
        cache.save(fresh)
    return listing


def listed_headers(storage: Storage, stamps: Mapping[str, list[Any]]) -> list[ObjectStat]:
    """The objects under snapshots/ with their size and time, for the readers that do not
    tell a changed header by them: `check` (it reads every header) and the choice of a
    snapshot among thousands (``cached_history``: a restore reads the chosen header, and
    passes over one damaged or gone since, ``Repository.find_snapshot``; a backup takes
    its parent's id alone, which nothing reads back). ``stamps``: the
    size and time (its first two fields) each header had when this host verified it, by
    snapshot id.

    Where the storage's times are the writer's own (a local directory, where ``touch`` sets
    them), a header ``stamps`` holds is listed by name alone and given its verified size
    and time: a stat per header was ~45 ms of listing 10,000 of them, a third of a
    `restore`'s listing. A header's name is the SHA-256 of its sealed body, so the body
    cannot change unseen by whoever reads it; its signature trailer is outside the name,
    and the choice goes by the signature check it verified. Where the storage dates its
    objects (S3 LastModified) the time rule needs that date, and the listing gives it at no
    extra cost."""
    if write_times_trusted(storage):
        return list(storage.list(NAMESPACE))
    listed = []
    start = len(NAMESPACE)
    for name in list_names(storage, NAMESPACE):
        stamp = stamps.get(name[start:])  # by id: a name below snapshots/x/ is no id
        if stamp is not None and len(stamp) >= 2 and type(stamp[0]) is int and type(stamp[1]) is float:
            listed.append(ObjectStat(name, stamp[0], stamp[1]))
            continue
        try:
            listed.append(storage.stat(name))
        except NotFoundError:  # forgotten since it was listed
            continue
    return listed


def _read_headers(
    names: list[str], fetched: Callable[[str], Loaded], storage: Storage, workers: int
) -> list[Loaded]:
    """``fetched`` of each of ``names``, in order. From a local repository one after
    another, with the collector paused: threads would only add overhead (a local header is
    read in microseconds, and threads of one interpreter hand its lock to each other on
    every read). From a remote one on ``workers`` threads, with the collector on: the reads
    wait on the network, for minutes in a first listing or a `check`."""
    if storage.url.startswith("file://"):
        with memory.collection_paused():
            return [fetched(name) for name in names]
    if not names:
        return []
    # a few batches per worker: a future per header cost more than reading a cached one,
    # and a short listing still spreads over every worker
    size = min(LOAD_BATCH, max(1, -(-len(names) // (workers * 4))))
    batches = [names[i : i + size] for i in range(0, len(names), size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [r for batch in pool.map(lambda b: [fetched(n) for n in b], batches) for r in batch]


@memory.collection_paused()
def _judged_listing(
    names: list[str],
    results: list[Loaded],
    listed: dict[str, ObjectStat],
    trust: Trust | None,
) -> SnapshotListing:
    """The loaded headers judged into a listing, oldest first. Building it, as decoding the
    cache, pauses the garbage collector (memory.collection_paused): 10,000 headers made it
    walk them again and again, 30-90 ms of a ~400 ms listing. Downloads of headers are not
    paused: a first listing or a `check` of a remote repository can take minutes, and the
    daemon's other threads need the collector meanwhile."""
    listing = SnapshotListing()
    now = clock.now()  # one moment for the whole listing
    for name, result in zip(names, results, strict=True):
        if isinstance(result, tuple) and isinstance(result[0], Unopened):
            snapshot_id = name.rsplit("/", 1)[-1]
            mtime = listed[name].mtime
            when = trust.times.of(snapshot_id, mtime) if trust is not None else None
            when = when or datetime.fromtimestamp(mtime, UTC)
            verdict = _judged_unopened(snapshot_id, result[0], result[1], trust, when)
            if isinstance(verdict, RefusedSnapshot):
                listing.refused.append(verdict)
            else:
                listing.sealed[snapshot_id] = verdict
        elif isinstance(result, tuple):
            judged = _judged(result[0], result[1], trust, listed[name].mtime, now)
            if isinstance(judged, SnapshotInfo):
                listing.accepted.append(judged)
            else:
                listing.refused.append(judged)
        elif isinstance(result, str):
            listing.damaged[name] = result
    listing.accepted.sort(key=lambda s: (s.time, s.id))
    listing.refused.sort(key=lambda s: (s.time or datetime.min.replace(tzinfo=UTC), s.id))
    return listing


def _answers(hit: list[Any] | None, listed: ObjectStat, codec: MetadataCodec) -> TypeGuard[list[Any]]:
    """Whether a cache entry stands for a header listed with its size and time without
    reading it: the recovery side reads another writer's sealed header itself."""
    return (
        hit is not None
        and hit[0] == listed.size
        and hit[1] == listed.mtime
        and not (len(hit) == UNOPENED_FIELDS and codec.reads_all)
    )


def _verified_by(entry: list[Any]) -> dict[str, str]:
    """Per side ("writer", "recovery"): the digest of the bytes it verified."""
    verified = entry[2]
    return {k: v for k, v in verified.items() if isinstance(v, str)} if isinstance(verified, dict) else {}


def _cached_check(
    data: object, checks: dict[tuple[str, ...], SignatureCheck | None]
) -> SignatureCheck | None:
    """``SignatureCheck.from_json`` of a cached form, decoded once per listing in ``checks``:
    a writer's thousands of headers share one form. None for a form that is not one."""
    try:
        form = tuple(data) if isinstance(data, list) else ()
        if form not in checks:
            checks[form] = SignatureCheck.from_json(data)
        return checks[form]
    except TypeError:  # an element that cannot be hashed: not a form a check is cached in
        return None


def _reuse(
    hit: list[Any],
    snapshot_id: str,
    codec: MetadataCodec,
    checks: dict[tuple[str, ...], SignatureCheck | None],
) -> tuple[SnapshotInfo, SignatureCheck] | tuple[Unopened, str | None] | None:
    """A cache entry as ``list_snapshots`` returns it; None when it must be read again (the
    recovery side tries another writer's header itself, an entry this handle cannot open
    or that is damaged). ``checks``: the signature checks decoded so far, by their cached
    form."""
    if len(hit) == UNOPENED_FIELDS:
        unopened = Unopened.from_json(hit[3])
        if unopened is None or codec.reads_all:
            return None
        claims = hit[4]
        return unopened, claims if isinstance(claims, str) else None
    check = _cached_check(hit[3], checks)
    if check is None or not _opens(codec, check, hit[4] is True):
        return None
    info = _cached_snapshot(snapshot_id, hit)
    return (info, check) if info is not None else None  # None: read the header itself


def _cached_snapshot(snapshot_id: str, entry: list[Any]) -> SnapshotInfo | None:
    """The snapshot from its cached fields, which ``snapshot_from_payload`` checked when the
    header was verified and the cache's seal has kept since (only this host's key file
    seals it): only their shape is checked again, so that an entry of another layout is
    read afresh, not taken. Half the cost of a listing from the cache was checking every
    field of 10,000 headers again."""
    try:
        asset, kind, time, host, labels, stats, tree, key_id, parent, tree_format = entry[5:]
        info = SnapshotInfo(
            snapshot_id,
            asset,
            kind,
            datetime.fromisoformat(time),
            host,
            labels,
            SnapshotStats(*stats),
            tree,
            key_id,
            parent,
            tree_format,
        )
    except (TypeError, ValueError):
        return None
    shaped = (
        type(asset) is str and type(tree) is list and type(labels) is dict and len(stats) == len(STATS_FIELDS)
    )
    return info if shaped else None


def opened_fields(info: SnapshotInfo, check: list[Any], sealed: bool) -> list[Any]:
    """What the cache keeps of an opened header after its size, time and digests (the
    layout in repo/snapshot_cache.py)."""
    return [
        check,
        sealed,
        info.asset,
        info.kind,
        info.time.isoformat(),
        info.host,
        info.labels,
        [getattr(info.stats, name) for name in STATS_FIELDS],
        info.tree,
        info.key_id,
        info.parent,
        info.tree_format,
    ]


def load_snapshots(
    storage: Storage, codec: MetadataCodec, workers: int = 8, cache: SnapshotCache | None = None
) -> tuple[list[SnapshotInfo], dict[str, str]]:
    """Readable snapshots of a repository without writer checks, and the damaged ones
    (what a legacy repository's readers see; everything else uses ``list_snapshots``)."""
    listing = list_snapshots(storage, codec, None, workers, cache)
    return listing.accepted, listing.damaged


@dataclass(frozen=True)
class CachedSnapshot:
    """A snapshot known from the local cache's summary: what choosing one needs."""

    id: str
    time: datetime
    asset: str

    def info(self, storage: Storage, codec: MetadataCodec) -> SnapshotInfo:
        """The chosen snapshot's header, read and verified from the storage."""
        return decode_snapshot(self.id, storage.get(snapshot_name(self.id)), codec)

    def info_if_intact(self, storage: Storage, codec: MetadataCodec) -> SnapshotInfo | None:
        """``info``; None when the header is gone or its bytes no longer hash to its name
        (rewritten since it was verified)."""
        try:
            data = storage.get(snapshot_name(self.id))
        except NotFoundError:
            return None
        if split_signed(self.id, data) is None:
            return None
        return decode_snapshot(self.id, data, codec)


def _summary_row(
    size: int, mtime: float, result: tuple[SnapshotInfo, SignatureCheck, bool] | Unopened
) -> list[Any]:
    """The summary row of a header just read, as of its cache entry (one layout, in
    repo/snapshot_cache.py)."""
    if isinstance(result, Unopened):  # another writer's: no time or asset to choose by
        return summary_row([size, mtime, {}, result.to_json(), None])
    info, check, sealed = result
    return summary_row([size, mtime, {}, *opened_fields(info, check.to_json(), sealed)])


class CachedHistory:
    """One asset's listed snapshots (or every asset's) from the local cache's summary, oldest
    first, each judged against the registry only when a caller reaches it: choosing the
    newest of 10,000 judges one, not 10,000. Every verdict is taken at one moment, the
    listing's."""

    def __init__(
        self, rows: list[tuple[datetime, str, str, SignatureCheck, float]], trust: Trust | None
    ) -> None:
        # by (time, id) alone: ids are unique (cached_history leaves a listing with a header
        # under another name, snapshots/x/ID, to the full read), and a check is not orderable
        self.rows = sorted(rows, key=lambda row: (row[0], row[1]))
        self.trust = trust
        self.now = clock.now()

    def newest_first(self, prefix: str = "", at: datetime | None = None) -> Iterator[CachedSnapshot]:
        """The accepted snapshots, newest first: those whose id starts with ``prefix`` and,
        with ``at``, those taken at or before it."""
        for time, snapshot_id, asset, check, mtime in reversed(self.rows):
            if (at is not None and time > at) or not snapshot_id.startswith(prefix):
                continue
            trust = self.trust
            if trust is None or trust.judge(
                check, asset, time, now=self.now, stored=trust.times.of(snapshot_id, mtime)
            ):
                yield CachedSnapshot(snapshot_id, time, asset)


def cached_history(
    storage: Storage,
    codec: MetadataCodec,
    cache: SnapshotCache,
    trust: Trust | None,
    asset: str | None = None,
) -> CachedHistory | None:
    """Every listed snapshot of ``asset`` (None: of every asset) from the cache's summary,
    reading only the headers it does not hold as listed (and adding them); None when there
    is no summary yet or one of those headers is damaged (then ``load_snapshots`` reads and
    reports). Choosing the parent (by id alone) or the snapshot to restore (its header
    read) among thousands then costs a listing (names alone on a local repository,
    ``listed_headers``) and one small file, not a decoded header per snapshot.
    Snapshots sealed by other writers are left out, and the refused ones are skipped when
    the history is walked (the cached signature check is judged afresh against ``trust``)."""
    # decoding the summary and building the rows pause the collector, as _judged_listing
    # does; listing the storage and reading the headers the summary lacks do not
    with memory.collection_paused():
        summary = cache.load_summary()
    if not summary:
        return None
    listed = listed_headers(storage, summary)
    read = _summarise_unlisted(listed, summary, storage, codec)
    if read is None:
        return None
    gone, added = read
    present = [o for o in listed if o.name not in gone]
    with memory.collection_paused():
        history = _history_from_summary(summary, present, codec, trust, asset)
    if history is not None and added:
        cache.save_summary(summary)
    return history


def _summarise_unlisted(
    listed: list[ObjectStat], summary: dict[str, list[Any]], storage: Storage, codec: MetadataCodec
) -> tuple[set[str], bool] | None:
    """Reads into ``summary`` the headers it does not hold as listed (new since it was
    saved, or listed with another size or time): the names gone meanwhile, and whether any
    was read. None when a name is not a header's or a header is damaged (then the full
    listing reads and reports it)."""
    gone: set[str] = set()
    added = False
    for obj in listed:
        snapshot_id = obj.name.rsplit("/", 1)[-1]
        if obj.name != snapshot_name(snapshot_id):
            return None
        row = summary.get(snapshot_id)
        if row is None or row[:2] != [obj.size, obj.mtime] or (row[3] is None and codec.reads_all):
            try:
                result = _decode(snapshot_id, storage.get(obj.name), codec)
            except IntegrityError:
                return None
            except NotFoundError:
                gone.add(obj.name)  # forgotten meanwhile
                continue
            summary[snapshot_id] = _summary_row(obj.size, obj.mtime, result)
            added = True
    return gone, added


def _history_from_summary(
    summary: dict[str, list[Any]],
    listed: list[ObjectStat],
    codec: MetadataCodec,
    trust: Trust | None,
    asset: str | None,
) -> CachedHistory | None:
    """The asset's history from ``summary``, which holds every one of ``listed``."""
    rows = []
    checks: dict[tuple[str, ...], SignatureCheck | None] = {}  # a writer's rows share one form
    for obj in listed:
        snapshot_id = obj.name.rsplit("/", 1)[-1]
        row = summary[snapshot_id]
        if row[3] is None or (asset is not None and row[3] != asset):
            continue  # sealed for another writer, or unsigned (never chosen); or not asked for
        check = _cached_check(row[4], checks)
        if check is None:
            return None
        if not _opens(codec, check, row[5] is True):
            continue  # opened here by the recovery side: not this writer's to choose
        try:
            rows.append((datetime.fromisoformat(row[2]), snapshot_id, str(row[3]), check, obj.mtime))
        except (TypeError, ValueError):
            return None
    return CachedHistory(rows, trust)


def snapshot_object(snapshot_id: str) -> str:
    """The storage name of a snapshot header."""
    return snapshot_name(snapshot_id)
