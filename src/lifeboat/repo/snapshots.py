"""Snapshot headers: encoding, decoding and listing."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime
from typing import Any

from lifeboat.errors import IntegrityError, NotFoundError
from lifeboat.repo.format import SNAPSHOT_MAGIC, decode_framed, encode_framed, is_object_id, snapshot_name
from lifeboat.repo.keyring import Keyring
from lifeboat.repo.model import SnapshotInfo, SnapshotStats
from lifeboat.storage.base import Storage


def snapshot_payload(info: SnapshotInfo) -> dict[str, Any]:
    return {
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


def encode_snapshot(info: SnapshotInfo, keyring: Keyring) -> tuple[str, bytes]:
    data = encode_framed(SNAPSHOT_MAGIC, snapshot_payload(info), keyring.mac)
    return hashlib.sha256(data).hexdigest(), data


def decode_snapshot(snapshot_id: str, data: bytes, keyring: Keyring) -> SnapshotInfo:
    if hashlib.sha256(data).hexdigest() != snapshot_id:
        raise IntegrityError(f"snapshot {snapshot_id[:12]} does not match its name (content hash differs)")
    p = decode_framed(SNAPSHOT_MAGIC, data, keyring.mac, f"snapshot {snapshot_id[:12]}")
    tree = p.get("tree")
    if not isinstance(tree, list) or not all(is_object_id(t) for t in tree):
        raise IntegrityError(f"snapshot {snapshot_id[:12]} is damaged (malformed tree ids)")
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
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise IntegrityError(f"snapshot {snapshot_id[:12]} is damaged") from None


def load_snapshots(
    storage: Storage, keyring: Keyring, workers: int = 8
) -> tuple[list[SnapshotInfo], dict[str, str]]:
    """All readable snapshots, oldest first, and the damaged ones (name -> problem)."""
    names = [obj.name for obj in storage.list("snapshots/")]

    def load(name: str) -> SnapshotInfo | str | None:
        snapshot_id = name.rsplit("/", 1)[-1]
        try:
            return decode_snapshot(snapshot_id, storage.get(name), keyring)
        except IntegrityError as exc:
            return str(exc)
        except NotFoundError:
            return None

    good: list[SnapshotInfo] = []
    damaged: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for name, result in zip(names, pool.map(load, names), strict=True):
            if isinstance(result, SnapshotInfo):
                good.append(result)
            elif isinstance(result, str):
                damaged[name] = result
    good.sort(key=lambda s: (s.time, s.id))
    return good, damaged


def snapshot_object(snapshot_id: str) -> str:
    return snapshot_name(snapshot_id)
