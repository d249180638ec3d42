"""Object-storage snapshots: the inventory plus every object's content, incremental by
(key, ETag, size, last-modified): unchanged objects are not downloaded again."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from lifeboat import memory
from lifeboat.assets.objects.source import DirSource, ObjectInfo, Source, source_for
from lifeboat.assets.objects.transfer import (
    Counters,
    SizedReads,
    capture_workers,
    run_batched,
    with_retries,
)
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo import BackupSession, Repository, SnapshotInfo

if TYPE_CHECKING:
    from lifeboat.assets.objects.model import ObjectsAsset
    from lifeboat.policy import Policy


def object_meta(obj: ObjectInfo) -> dict[str, Any]:
    """The entry metadata kept for one object (version, etag, content type, ...)."""
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
        body, info = source.open_with_info(obj)
        stream = SizedReads(body, obj.size)
        try:
            entry = session.add_stream(
                obj.key,
                stream,  # type: ignore[arg-type]
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
    policy: Policy, asset: ObjectsAsset, repo: Repository, progress: ProgressSink = NO_PROGRESS
) -> SnapshotInfo:
    """Capture the source's current objects into one snapshot (unchanged objects reused)."""
    source = source_for(asset)
    counters = Counters()
    versioning = with_retries("reading versioning", source.versioning, counters)
    objects = with_retries("listing", source.list_current, counters)
    counters.objects = len(objects)
    progress.start(sum(o.size for o in objects))
    # dozens of threads waiting on a bucket: memory, not CPU, is what runs short
    mapped: AbstractContextManager[None] = (
        memory.large_buffers_mapped() if not isinstance(source, DirSource) else nullcontext()
    )
    with repo.backup(asset.name, "objects", progress=progress) as session:
        with mapped:
            # the first object that keeps failing aborts: no half snapshot
            run_batched(
                lambda o: _capture(session, source, o, counters), objects, capture_workers(source, asset)
            )
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
