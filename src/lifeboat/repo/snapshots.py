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

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from lifeboat.crypto.signed import SIGNATURE_MAGIC, SIGNATURE_SIZE, ObjectType
from lifeboat.errors import IntegrityError, NotFoundError
from lifeboat.repo.format import SNAPSHOT_MAGIC, decode_framed, encode_framed, is_object_id, snapshot_name
from lifeboat.repo.keyring import Keyring
from lifeboat.repo.model import SnapshotInfo, SnapshotStats
from lifeboat.repo.snapshot_cache import SnapshotCache
from lifeboat.repo.trust import SignatureCheck, Trust, Verdict, check_signature
from lifeboat.storage.base import Storage


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


def encode_snapshot(info: SnapshotInfo, keyring: Keyring) -> tuple[str, bytes]:
    """A snapshot's id and its stored, MAC'd header bytes."""
    data = encode_framed(SNAPSHOT_MAGIC, snapshot_payload(info), keyring.mac)
    return hashlib.sha256(data).hexdigest(), data


def split_signed(object_id: str, data: bytes) -> tuple[bytes, bytes | None] | None:
    """A content-addressed object's body and signature trailer (None: no trailer), or None
    when neither the whole nor the part before a trailer matches ``object_id``."""
    if hashlib.sha256(data).hexdigest() == object_id:
        return data, None
    body, trailer = data[:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:]
    if trailer.startswith(SIGNATURE_MAGIC) and hashlib.sha256(body).hexdigest() == object_id:
        return body, trailer
    return None


def decode_signed_snapshot(
    snapshot_id: str, data: bytes, keyring: Keyring
) -> tuple[SnapshotInfo, SignatureCheck]:
    """The snapshot from its stored bytes and what its trailer proves (IntegrityError when
    damaged or renamed)."""
    parts = split_signed(snapshot_id, data)
    if parts is None:
        raise IntegrityError(f"snapshot {snapshot_id[:12]} does not match its name (content hash differs)")
    body, trailer = parts
    p = decode_framed(SNAPSHOT_MAGIC, body, keyring.mac, f"snapshot {snapshot_id[:12]}")
    info = snapshot_from_payload(snapshot_id, p)
    check = check_signature(
        keyring.repo_id, ObjectType.SNAPSHOT, snapshot_name(snapshot_id), info.asset, body, trailer
    )
    return info, check


def decode_snapshot(snapshot_id: str, data: bytes, keyring: Keyring) -> SnapshotInfo:
    """The snapshot from its header bytes (IntegrityError when damaged or renamed)."""
    return decode_signed_snapshot(snapshot_id, data, keyring)[0]


@dataclass(frozen=True)
class RefusedSnapshot:
    """A well-formed header no reader may use, and who wrote it (as far as is known)."""

    id: str
    asset: str
    time: datetime
    writer: str | None
    reason: str

    def describe(self) -> str:
        """One line for ``check``, ``status`` and ``snapshots``."""
        who = self.writer or "an unknown writer"
        if self.reason == "signature does not match" and self.writer:
            who = f"a writer claiming to be {self.writer}"
        return (
            f"snapshot {self.id[:12]} of {self.asset} dated {self.time.isoformat(timespec='seconds')} "
            f"by {who} refused: {self.reason}"
        )


@dataclass
class SnapshotListing:
    """Every listed snapshot header, sorted: accepted (oldest first), refused, damaged."""

    accepted: list[SnapshotInfo] = field(default_factory=list)
    refused: list[RefusedSnapshot] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)  # object name -> problem


def _judged(info: SnapshotInfo, check: SignatureCheck, trust: Trust | None) -> SnapshotInfo | RefusedSnapshot:
    if trust is None:  # a legacy repository: no writer identities to check against
        return info
    verdict: Verdict = trust.judge(check, info.asset, info.time)
    if verdict:
        return info
    return RefusedSnapshot(info.id, info.asset, info.time, verdict.writer, str(verdict.reason))


def snapshot_from_payload(snapshot_id: str, p: dict[str, Any]) -> SnapshotInfo:
    """The header's fields, checked (from a verified header, or the snapshot cache)."""
    tree = p.get("tree")
    if not isinstance(tree, list) or not all(is_object_id(t) for t in tree):
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


def list_snapshots(
    storage: Storage,
    keyring: Keyring,
    trust: Trust | None,
    workers: int = 8,
    cache: SnapshotCache | None = None,
) -> SnapshotListing:
    """Every listed snapshot header judged: accepted, refused (writer and reason), damaged.
    With ``cache``, a header verified before and listed with the same size and time is
    taken from it (repo/snapshot_cache.py); its signature check is cached with it, the
    registry and the time rule are applied afresh on every listing."""
    listed = {obj.name: obj for obj in storage.list("snapshots/")}
    names = list(listed)
    cached = cache.load() if cache is not None else {}
    fresh: dict[str, dict[str, Any]] = {}

    def load(name: str) -> tuple[SnapshotInfo, SignatureCheck] | str | None:
        snapshot_id = name.rsplit("/", 1)[-1]
        stamp = [listed[name].size, listed[name].mtime]
        hit = cached.get(snapshot_id)
        if hit is not None and hit.get("stat") == stamp and isinstance(hit.get("header"), dict):
            check = SignatureCheck.from_json(hit.get("signature"))
            try:
                if check is not None:
                    info = snapshot_from_payload(snapshot_id, hit["header"])
                    fresh[snapshot_id] = hit
                    return info, check
            except IntegrityError:
                pass  # a damaged cache entry: read the header itself
        try:
            info, check = decode_signed_snapshot(snapshot_id, storage.get(name), keyring)
        except IntegrityError as exc:
            return str(exc)
        except NotFoundError:
            return None
        fresh[snapshot_id] = {"stat": stamp, "header": snapshot_payload(info), "signature": check.to_json()}
        return info, check

    if cached and all(n.rsplit("/", 1)[-1] in cached for n in names):
        results = list(map(load, names))  # nothing to fetch: threads would only add overhead
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(load, names))
    listing = SnapshotListing()
    for name, result in zip(names, results, strict=True):
        if isinstance(result, tuple):
            judged = _judged(*result, trust)
            if isinstance(judged, SnapshotInfo):
                listing.accepted.append(judged)
            else:
                listing.refused.append(judged)
        elif isinstance(result, str):
            listing.damaged[name] = result
    listing.accepted.sort(key=lambda s: (s.time, s.id))
    listing.refused.sort(key=lambda s: (s.time, s.id))
    if cache is not None and (fresh.keys() != cached.keys() or not cache.has_summary()):
        cache.save(fresh)
    return listing


def load_snapshots(
    storage: Storage, keyring: Keyring, workers: int = 8, cache: SnapshotCache | None = None
) -> tuple[list[SnapshotInfo], dict[str, str]]:
    """Readable snapshots of a repository without writer checks, and the damaged ones
    (what a legacy repository's readers see; everything else uses ``list_snapshots``)."""
    listing = list_snapshots(storage, keyring, None, workers, cache)
    return listing.accepted, listing.damaged


@dataclass(frozen=True)
class CachedSnapshot:
    """A snapshot known from the local cache's summary: what choosing one needs."""

    id: str
    time: datetime
    asset: str

    def info(self, storage: Storage, keyring: Keyring) -> SnapshotInfo:
        """The chosen snapshot's header, read and verified from the storage."""
        return decode_snapshot(self.id, storage.get(snapshot_name(self.id)), keyring)


def cached_history(
    storage: Storage, keyring: Keyring, cache: SnapshotCache, trust: Trust | None
) -> list[CachedSnapshot] | None:
    """Every listed snapshot, oldest first, from the cache's summary, reading only the
    headers it does not hold as listed (and adding them); None when there is no summary yet
    or one of those headers is damaged (then ``load_snapshots`` reads and reports). Choosing
    the parent or the snapshot to restore among thousands then costs a listing, one small
    file and the chosen header, not a decoded header per snapshot. Refused snapshots are
    left out (the cached signature check is judged afresh against ``trust``)."""
    summary = cache.load_summary()
    if not summary:
        return None
    found = []
    added = False
    for obj in storage.list("snapshots/"):
        snapshot_id = obj.name.rsplit("/", 1)[-1]
        row = summary.get(snapshot_id)
        if row is None or row[:2] != [obj.size, obj.mtime]:
            try:
                info, read = decode_signed_snapshot(snapshot_id, storage.get(obj.name), keyring)
            except IntegrityError:
                return None
            except NotFoundError:
                continue  # forgotten meanwhile
            row = summary[snapshot_id] = [
                obj.size,
                obj.mtime,
                info.time.isoformat(),
                info.asset,
                read.to_json(),
            ]
            added = True
        check = SignatureCheck.from_json(row[4])
        if check is None:
            return None
        try:
            snap = CachedSnapshot(snapshot_id, datetime.fromisoformat(row[2]), str(row[3]))
        except (TypeError, ValueError):
            return None
        if trust is None or trust.judge(check, snap.asset, snap.time):
            found.append(snap)
    if added:
        cache.save_summary(summary)
    found.sort(key=lambda s: (s.time, s.id))
    return found


def snapshot_object(snapshot_id: str) -> str:
    """The storage name of a snapshot header."""
    return snapshot_name(snapshot_id)
