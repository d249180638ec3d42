"""Object-storage snapshots: the inventory plus every object's content, incremental by
(key, ETag, size, last-modified): unchanged objects are not downloaded again."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError

from lifeboat.assets.objects.source import ObjectInfo, Source, open_source
from lifeboat.errors import StorageError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo import BackupSession, Repository, SnapshotInfo

ATTEMPTS = 5


@dataclass
class Counters:
    objects: int = 0
    downloaded: int = 0
    reused: int = 0
    bytes_downloaded: int = 0
    retries: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, **values: int) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self, key, getattr(self, key) + value)


def with_retries(what: str, fn: Any, counters: Counters) -> Any:
    """Retry throttling, 5xx and dropped connections with exponential backoff."""
    delay = 0.2
    for attempt in range(ATTEMPTS):
        try:
            return fn()
        except (StorageError, BotoCoreError, OSError, ValueError) as exc:
            transient = not isinstance(exc, StorageError) or exc.transient
            if not transient or attempt == ATTEMPTS - 1:
                if isinstance(exc, StorageError):
                    raise
                raise StorageError(
                    f"{what} kept failing after {ATTEMPTS} attempts: {type(exc).__name__}"
                ) from None
            counters.add(retries=1)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def object_meta(obj: ObjectInfo) -> dict[str, Any]:
    return {
        "key": obj.key,
        "version_id": obj.version_id,
        "etag": obj.etag,
        "content_type": obj.content_type,
        "metadata": obj.metadata,
        "tags": obj.tags,
        "last_modified": obj.last_modified.isoformat(),
    }


def _capture(session: BackupSession, source: Source, obj: ObjectInfo, counters: Counters) -> None:
    identity = obj.identity  # from the listing, so the next listing finds it again
    if session.reuse(obj.key, identity) is not None:
        counters.add(reused=1)
        return

    def download() -> None:
        stream, info = source.open_with_info(obj)
        try:
            entry = session.add_stream(
                obj.key,
                stream,
                mtime_ns=int(obj.last_modified.timestamp() * 1e9),
                meta=object_meta(info),
                identity=identity,
            )
        finally:
            stream.close()
        if entry.size != obj.size:
            raise ValueError("short read")  # a dropped connection can end a body early
        counters.add(downloaded=1, bytes_downloaded=entry.size)

    with_retries(f"downloading {obj.key}", download, counters)


def backup_objects(
    policy: Any, asset: Any, repo: Repository, progress: ProgressSink = NO_PROGRESS
) -> SnapshotInfo:
    source = open_source(asset.source, asset.endpoint_url, asset.region, asset.workers)
    counters = Counters()
    versioning = with_retries("reading versioning", source.versioning, counters)
    objects = with_retries("listing", source.list_current, counters)
    counters.objects = len(objects)
    progress.start(sum(o.size for o in objects))
    with repo.backup(asset.name, "objects", progress=progress) as session:
        with ThreadPoolExecutor(max_workers=asset.workers) as pool:
            for future in [pool.submit(_capture, session, source, o, counters) for o in objects]:
                future.result()  # the first object that keeps failing aborts: no half snapshot
        session.set_labels(
            {
                "source": asset.source,
                "versioning": versioning,
                "objects": str(counters.objects),
                "downloaded": str(counters.downloaded),
                "reused": str(counters.reused),
                "bytes_downloaded": str(counters.bytes_downloaded),
                "retries": str(counters.retries),
            }
        )
        return session.commit()
