"""Object-storage snapshots: the inventory plus every object's content, incremental by
(key, ETag, size, last-modified): unchanged objects are not downloaded again."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from lifeboat import memory
from lifeboat.assets.objects.keypaths import KEY_PATHS_LABEL, KEY_PATHS_VERSION
from lifeboat.assets.objects.source import DirSource, ObjectDir, ObjectInfo, Source, source_for
from lifeboat.assets.objects.transfer import (
    Counters,
    SizedReads,
    capture_workers,
    run_batched,
    with_retries,
)
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo import BackupSession, Entry, Repository, SnapshotInfo
from lifeboat.repo.chunking import SMALL_FILE

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
                mtime_ns=mtime_ns_of(obj),
                meta=object_meta(info),
                identity=identity,
            )
        finally:
            stream.close()
        counted_download(obj, entry, counters)

    with_retries(f"downloading {obj.key}", download, counters)


def mtime_ns_of(obj: ObjectInfo) -> int:
    """The object's last-modified time as an entry's mtime."""
    return int(obj.last_modified.timestamp() * 1e9)


def counted_download(obj: ObjectInfo, entry: Entry, counters: Counters) -> None:
    """Counts a download whose stored size is the listed one (else a retryable short read)."""
    if entry.size != obj.size:
        raise ValueError("short read")  # a dropped connection can end a body early
    counters.add(downloaded=1, bytes_downloaded=entry.size)


READ_AHEAD_FILES = 256  # files of a dir:// source asked of the disk ahead of their reading


def _capture_in_order(
    session: BackupSession, source: DirSource, obj: ObjectInfo, parent: bytes | None, counters: Counters
) -> None:
    """One object into a streamed tree, in walk order: the parent's entry as stored when
    unchanged (``parent``, looked up in walk order too), else its content read."""
    if parent is not None and session.put_unchanged(obj.key, obj.identity, parent) is not None:
        counters.add(reused=1)
        return

    def download() -> tuple[Entry, str] | None:
        try:
            body, now = source.open_with_info(obj)  # as it is now: it may have changed since the walk
        except FileNotFoundError:
            return None  # deleted since the walk saw it: left out, as the walk leaves it out
        stream = SizedReads(body, now.size)  # no 1 MiB block allocated to read 2 KB
        try:
            entry = session.read_stream(
                obj.key,
                stream,  # type: ignore[arg-type]
                mtime_ns=mtime_ns_of(now),
                meta=object_meta(now),
            )
        finally:
            stream.close()
        counted_download(now, entry, counters)  # still growing as it was read: read again
        return entry, now.identity

    read = with_retries(f"reading {obj.key}", download, counters)
    if read is None:
        counters.add(vanished=1)
        return
    session.put(*read)


_Walked = ObjectDir | tuple[ObjectInfo, bytes | None]  # a directory, or an object and its parent entry


def backup_directory(
    asset: ObjectsAsset, source: DirSource, repo: Repository, progress: ProgressSink
) -> SnapshotInfo:
    """A ``dir://`` source as it is walked, into a streamed tree (one document per
    directory, the parent read in the same order): memory does not grow with the number of
    files, as for the files kind. One reader: for files of a few KB the interpreter's
    hand-offs between threads cost more than the reads (capture_workers); a large file's
    blocks are still hashed, compressed and sealed by the chunk workers in parallel. The
    small files it will read are asked of the disk READ_AHEAD_FILES ahead, so that it does
    not wait on the disk once per file."""
    counters = Counters()
    with repo.backup(asset.name, "objects", progress=progress) as session:
        session.stream_tree()
        progress.start(None)  # the total is known only once the walk is over
        ahead: deque[_Walked] = deque()
        for item in source.walk_current():
            if isinstance(item, ObjectDir):
                ahead.append(item)
            else:
                counters.objects += 1
                parent = session.parent_encoded(item.key, item.identity)
                if parent is None and item.size < SMALL_FILE:
                    source.will_read(item)
                ahead.append((item, parent))
            if len(ahead) > READ_AHEAD_FILES:
                _put_walked(session, source, ahead.popleft(), counters)
        while ahead:
            _put_walked(session, source, ahead.popleft(), counters)
        labels = capture_labels(asset, "Unsupported", counters)
        session.set_labels(labels | {KEY_PATHS_LABEL: KEY_PATHS_VERSION})  # how its keys name files
        return session.commit()


def _put_walked(session: BackupSession, source: DirSource, walked: _Walked, counters: Counters) -> None:
    if isinstance(walked, ObjectDir):
        session.put(Entry(path=walked.key, type="dir", mode=0o755, mtime_ns=walked.mtime_ns))
    else:
        _capture_in_order(session, source, *walked, counters)


def capture_labels(asset: ObjectsAsset, versioning: str, counters: Counters) -> dict[str, str]:
    """The snapshot labels of an objects backup: its source and what the transfer did."""
    return {
        "source": asset.source,
        "versioning": versioning,
        "objects": str(counters.objects),
        "downloaded": str(counters.downloaded),
        "reused": str(counters.reused),
        "bytes_downloaded": str(counters.bytes_downloaded),
        "retries": str(counters.retries),
    } | ({"vanished": str(counters.vanished)} if counters.vanished else {})


def backup_objects(
    policy: Policy, asset: ObjectsAsset, repo: Repository, progress: ProgressSink = NO_PROGRESS
) -> SnapshotInfo:
    """Capture the source's current objects into one snapshot (unchanged objects reused)."""
    source = source_for(asset)
    if isinstance(source, DirSource):
        return backup_directory(asset, source, repo, progress)
    counters = Counters()
    versioning = with_retries("reading versioning", source.versioning, counters)
    objects = with_retries("listing", source.list_current, counters)
    counters.objects = len(objects)
    progress.start(sum(o.size for o in objects))
    with repo.backup(asset.name, "objects", progress=progress) as session:
        # dozens of threads waiting on a bucket: memory, not CPU, is what runs short
        with memory.large_buffers_mapped():
            # the first object that keeps failing aborts: no half snapshot
            run_batched(
                lambda o: _capture(session, source, o, counters), objects, capture_workers(source, asset)
            )
        session.set_labels(capture_labels(asset, versioning, counters))
        return session.commit()
