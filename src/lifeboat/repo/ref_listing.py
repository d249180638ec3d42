"""Judged listings of refs: which names hold an authorised ref, and which stored objects no
reader may use (forged, unsigned, another asset's writer, revoked, damaged).

Every decision that starts from a listing (a restore's WAL plan, ``wal verify``, timelines and
exposure in ``status``, drills, WAL expiry) goes through ``ref_listing``: a name counts only
when one of the objects stored for it (the name itself or a side-by-side copy) is authorised.
A ref is immutable once verified, so what each object's signature proves is kept in a local
cache (``refs.json`` in the repository's cache directory) with the size and time the listing
gave for it; the registry and the time rule are applied afresh every time. Like the snapshot
cache it is only an optimisation: unreadable, it is ignored and rebuilt. ``check`` never
uses it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from lifeboat.errors import ConfigError, IntegrityError, NotFoundError
from lifeboat.private import private_dir, write_private
from lifeboat.repo.local_cache import CacheSeal
from lifeboat.repo.model import RefInfo
from lifeboat.repo.refs import (
    StoredRef,
    choose,
    decode_signed_ref,
    judge_ref,
    judge_stored,
    logical_name,
    ref_payload,
)
from lifeboat.repo.trust import SignatureCheck, Trust
from lifeboat.storage.base import ObjectStat

if TYPE_CHECKING:
    from lifeboat.repo.handle import RepoHandle

CACHE_NAME = "refs.json"


@dataclass
class RefListing:
    """A namespace's refs: the authorised one per name, and what was refused."""

    chosen: dict[str, RefInfo] = field(default_factory=dict)
    refused: list[StoredRef] = field(default_factory=list)
    conflicts: dict[str, str] = field(default_factory=dict)  # name -> why it is unusable


def _info_json(info: RefInfo) -> dict[str, Any]:
    return {**ref_payload(info), "opened": info.opened}


def _info_from(data: dict[str, Any]) -> RefInfo:
    return RefInfo(
        str(data["namespace"]),
        str(data["name"]),
        int(data["size"]),
        str(data["digest"]),
        [str(c) for c in data["chunks"]],
        datetime.fromisoformat(str(data["time"])),
        {str(k): str(v) for k, v in data["labels"].items()},
        opened=data.get("opened", True) is not False,
    )


class RefCache:
    """Decoded refs and their signature checks by object name, with the listed size and time."""

    def __init__(self, directory: Path | None, seal: CacheSeal, memo: dict[str, Any] | None = None) -> None:
        self.path = directory / CACHE_NAME if directory is not None else None
        self.memo = memo if directory is None else None  # the handle's own, in memory
        self.seal = seal

    def load(self) -> dict[str, Any]:
        """The cached entries ({} when there is no usable cache)."""
        if self.memo is not None:
            return dict(self.memo)
        if self.path is None:
            return {}
        try:
            raw = self.seal.open(CACHE_NAME, self.path.read_bytes())
            data = orjson.loads(raw) if raw is not None else None
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, entries: dict[str, Any]) -> None:
        """Replace the cache (a read-only cache directory only costs speed)."""
        if self.memo is not None:
            self.memo.clear()
            self.memo.update(entries)
        if self.path is None:
            return
        try:
            private_dir(self.path.parent)
            write_private(self.path, self.seal.seal(CACHE_NAME, orjson.dumps(entries)))
        except (OSError, ConfigError):
            pass


def _cached(entry: object, obj: ObjectStat, reads_all: bool) -> tuple[RefInfo, SignatureCheck] | None:
    """A cache entry still true of the listed object (the recovery side opens again what a
    writer's handle could not)."""
    if not isinstance(entry, list) or len(entry) != 4 or entry[:2] != [obj.size, obj.mtime]:
        return None
    check = SignatureCheck.from_json(entry[3])
    try:
        info = _info_from(entry[2]) if isinstance(entry[2], dict) else None
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if check is None or info is None or info.time.tzinfo is None or (reads_all and not info.opened):
        return None
    return info, check


def judged_objects(repo: RepoHandle, prefix: str, *, use_cache: bool = True) -> list[StoredRef]:
    """Every object under ``prefix`` (within ``refs/``), decoded and judged."""
    trust: Trust | None = repo.trust()
    listed = list(repo.storage.list(prefix))
    seal = repo.cache_seal
    cache = RefCache(repo.cache_dir, seal, repo.ref_memo) if use_cache else RefCache(None, seal)
    entries = cache.load()
    reads_all = repo.metadata.reads_all
    fresh: dict[str, Any] = {k: v for k, v in entries.items() if not k.startswith(prefix)}

    def one(obj: ObjectStat) -> StoredRef | None:
        hit = _cached(entries.get(obj.name), obj, reads_all)
        if hit is not None:
            fresh[obj.name] = entries[obj.name]
            return StoredRef(obj.name, hit[0], judge_ref(trust, *hit))
        try:
            data = repo.storage.get(obj.name)
        except NotFoundError:
            return None  # forgotten meanwhile
        try:
            info, check = decode_signed_ref(repo, obj.name, data)
        except IntegrityError:
            return judge_stored(repo, trust, obj.name, data)  # refused as damaged
        fresh[obj.name] = [obj.size, obj.mtime, _info_json(info), check.to_json()]
        return StoredRef(obj.name, info, judge_ref(trust, info, check))

    if all(_cached(entries.get(o.name), o, reads_all) is not None for o in listed):
        results = [one(o) for o in listed]
    else:
        with ThreadPoolExecutor(max_workers=repo.workers) as pool:
            results = list(pool.map(one, listed))
    if use_cache and fresh != entries:
        cache.save(fresh)
    return [r for r in results if r is not None]


def ref_listing(repo: RepoHandle, namespace: str) -> RefListing:
    """The namespace's names that hold an authorised ref (the ref chosen for each), the
    refused objects, and names where authorised writers disagree (used by nobody)."""
    listing = RefListing()
    by_name: dict[str, list[StoredRef]] = {}
    for stored in judged_objects(repo, f"refs/{namespace}/"):
        try:
            ns, name = logical_name(stored.object_name)
        except IntegrityError:
            continue
        if ns != namespace:
            continue  # a deeper namespace (``wal/a/b``) is not this one's
        by_name.setdefault(name, []).append(stored)
        if not stored.verdict or stored.info is None:
            listing.refused.append(stored)
    for name, stored_list in by_name.items():
        try:
            chosen = choose(namespace, name, stored_list)
        except IntegrityError as exc:
            listing.conflicts[name] = str(exc)
            continue
        if chosen is not None and chosen.info is not None:
            listing.chosen[name] = chosen.info
    return listing


def refused_refs(repo: RepoHandle) -> list[StoredRef]:
    """Every stored ref object no reader may use, across namespaces (for ``status``)."""
    return [s for s in judged_objects(repo, "refs/") if not s.verdict or s.info is None]
