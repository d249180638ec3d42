"""Restores of object storage: a snapshot (or the source's own version history at a
point in time) into a staging bucket/prefix or directory, or in place with delete markers
only. Every object uploaded to a bucket is checked against its recorded SHA-256: by S3
itself when a single PUT carries the checksum, through the store's ETag (the MD5 of what
it stored) when it does not echo one, otherwise by reading it back. A directory
gets exactly the verified chunks, and the size written is checked."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

from lifeboat.assets.objects.dirbatches import SmallObjects, goes_to_writer
from lifeboat.assets.objects.dirtarget import (
    DirWriter,
    DiskFull,
    SpaceNeeded,
    UnmappableKeys,
    open_dir_target,
    refuse_unmappable,
    unmappable_keys,
)
from lifeboat.assets.objects.info import ObjectInfo
from lifeboat.assets.objects.keypaths import KEY_PATHS_LABEL, KEY_PATHS_VERSION, key_of_legacy
from lifeboat.assets.objects.model import ObjectsAsset
from lifeboat.assets.objects.source import DirSource, Source, iter_chunks, source_for
from lifeboat.assets.objects.transfer import Counters, run_batched, transfer_workers, with_retries
from lifeboat.errors import ConfigError, IntegrityError, RestoreError, StorageError
from lifeboat.filewriters import WRITER_FROM, small_file_writer
from lifeboat.repo import Entry, SnapshotInfo, SnapshotReader
from lifeboat.repo.chunking import SMALL_FILE
from lifeboat.units import format_bytes

if TYPE_CHECKING:
    from lifeboat.assets.kind import RestoreRequest, RestoreRun


# Objects a restore plans in pack order at once: fewer than a files restore's PLAN_FILES,
# as an object's entry carries its metadata (~1 KB); still many packs' worth of small objects.
PLAN_OBJECTS = 4096
# Objects a transfer thread takes at a time, in pack order: the threads then read from a
# few neighbouring pack ranges at once. Sixteen (run_batched's) in key order spread 32
# threads over more ranges than PackRanges holds, and nearly every object read its range
# again: a 20,000-object restore into a bucket read 11.3 GB of packs for a 1 GB snapshot
# (1.1 GB now). Alternated with the code before: 25.8-28.5 s against 27.6-30.2 s, peak
# RSS 164-172 against 179-181 MB.
TRANSFER_BATCH = 2


class ChunkStream(io.RawIOBase):
    """A file-like view of verified snapshot chunks, for uploads: read whole for one PUT,
    buffered for a multipart upload (S3Source.upload)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = memoryview(b"")  # what is left of the current chunk, not copied

    def readable(self) -> bool:
        """Always readable: a file-like view over verified chunks."""
        return True

    def readinto(self, target: Any) -> int:
        """Fill `target` from the chunks; 0 at the end."""
        while not self._buffer:
            try:
                self._buffer = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def readall(self) -> bytes:
        """The rest at once (a single PUT): joined from the chunks, not read 8 KB at a time."""
        rest, self._buffer = bytes(self._buffer), memoryview(b"")
        return rest + b"".join(self._chunks) if rest else b"".join(self._chunks)


@dataclass
class ObjectsRestoreResult:
    """What an objects restore did (its fields are the `--json` report)."""

    ok: bool
    asset: str
    snapshot: str
    target: str
    restored: int = 0
    restored_bytes: int = 0
    skipped: int = 0
    deleted: int = 0
    failed: list[str] = field(default_factory=list)
    from_snapshot: int = 0
    from_versions: int = 0
    dry_run: bool = False
    plan: dict[str, list[str]] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (`lifeboat restore --json`)."""
        return asdict(self)


@dataclass
class Item:
    """One object a restore writes: from the snapshot or the source's version history."""

    key: str
    entry: Entry | None = None  # from the snapshot
    version: ObjectInfo | None = None  # from the source's version history


def state_from_versions(versions: list[ObjectInfo], at: datetime) -> tuple[dict[str, ObjectInfo], set[str]]:
    """(key -> live version at ``at``, keys whose history reaches back to ``at``)."""
    newest: dict[str, ObjectInfo] = {}
    for v in versions:
        if v.last_modified <= at and (v.key not in newest or v.last_modified > newest[v.key].last_modified):
            newest[v.key] = v
    live = {k: v for k, v in newest.items() if not v.is_delete_marker}
    return live, set(newest)


ItemPass = Callable[[], Iterator[Item]]  # a pass over what a restore writes, made again at will


def plan_items(reader: SnapshotReader, source: Source | None, at: datetime | None) -> ItemPass:
    """What the restore writes: the snapshot's objects, or each key's version at `at`.
    The snapshot's objects are read from its tree as they come: a pass over a snapshot of
    a directory holds one directory at a time, not every object."""
    files = reader.selected(lambda e: e.type == "file")
    labels = reader.info.labels
    if labels.get("source", "").startswith("dir://") and labels.get(KEY_PATHS_LABEL) != KEY_PATHS_VERSION:
        return lambda: (Item(key_of_legacy(e.path), entry=e) for e in files())
    if source is None or at is None:
        return lambda: (Item(e.path, entry=e) for e in files())
    live, known = state_from_versions(source.list_versions(), at)
    items = [Item(k, version=v) for k, v in live.items()]
    items += [Item(e.path, entry=e) for e in files() if e.path not in known]  # history pruned: use snapshot
    items.sort(key=lambda i: i.key)
    return lambda: iter(items)


def part_of(items: list[Item], shard: int, shards: int) -> list[Item]:
    """Part ``shard`` of ``shards`` contiguous parts of the sorted items, of about equal
    weight: every worker computes the same split from the same snapshot."""
    from lifeboat.assets.objects.shards import OBJECT_WEIGHT, cuts

    if not 0 <= shard < shards:
        raise ConfigError(f"--shard {shard} is not one of 0 to {shards - 1}")
    weights = [_size(i) + OBJECT_WEIGHT for i in items]
    starts = cuts(weights, shards)
    end = starts[shard + 1] if shard + 1 < shards else len(items)
    return items[starts[shard] : end]


def check_target_empty(asset: ObjectsAsset, target_url: str) -> None:
    """Before N workers start writing into one target (each then checks only its part)."""
    target = source_for(asset, target_url)
    counters = Counters()
    if isinstance(target, DirSource):
        open_dir_target(target)  # a local OS error is permanent: never retried
    else:
        with_retries("checking the target", target.ensure_exists, counters)
    current = with_retries("listing the target", target.list_current, counters)
    if current:
        raise RestoreError(
            f"target {target_url} is not empty ({len(current)} objects)",
            hint="restore into an empty bucket/prefix or directory, or pass --force",
        )


def refuse_unconfirmed(request: RestoreRequest) -> None:
    """An in-place restore rewrites the source bucket: only with --yes (or as a dry run)."""
    if request.in_place and not request.yes and not request.dry_run:
        raise ConfigError(
            "an in-place restore rewrites the source bucket",
            hint="confirm with --in-place --yes (or look first with --dry-run)",
        )


@dataclass
class _Survey:
    """One pass over what a restore writes, before it writes: what it will do, counted."""

    objects: int = 0
    skipped: int = 0
    bytes: int = 0
    unmappable: list[str] = field(default_factory=list)
    deletions: list[str] = field(default_factory=list)


def _survey(
    items: ItemPass,
    current: dict[str, ObjectInfo],
    in_place: bool,
    space: SpaceNeeded | None,
    mappable: UnmappableKeys | None,
) -> _Survey:
    survey = _Survey()
    stale = set(current) if in_place else set()
    for item in items():
        survey.objects += 1
        stale.discard(item.key)
        if mappable is not None:
            mappable.add(item.key)
        existing = current.get(item.key)
        if _identical(item, existing):
            survey.skipped += 1
            continue
        size = _size(item)
        survey.bytes += size
        if space is not None:
            space.add(size, existing.size if existing else None)
    survey.deletions = sorted(stale)
    if mappable is not None:
        survey.unmappable = mappable.found()
    return survey


def _list_target(target: Source, counters: Counters) -> dict[str, ObjectInfo]:
    """What the target holds now; nothing is created yet (a refused restore writes nothing)."""
    if isinstance(target, DirSource):
        try:
            return {o.key: o for o in target.list_current()} if target.root.is_dir() else {}
        except OSError as exc:  # a local OS error is permanent: never retried
            raise RestoreError(f"cannot read target {target.url}: {exc.strerror or exc}") from None
    with_retries("checking the target", target.ensure_exists, counters)
    return {o.key: o for o in with_retries("listing the target", target.list_current, counters)}


def restore_objects(run: RestoreRun) -> ObjectsRestoreResult:
    """Restore a snapshot's objects (and, for a past time, the source's versions) into the target."""
    started = time.monotonic()
    request, repo, progress = run.request, run.repo, run.progress
    asset = ObjectsAsset.of(run.asset)
    refuse_unconfirmed(request)
    in_place = request.in_place
    at = request.at
    assert run.snapshot is not None
    info = run.snapshot
    target_url = asset.source if in_place else str(request.target)
    target = source_for(asset, target_url)
    counters = Counters()
    reader = repo.reader(info)
    source = None
    if at is not None and not request.snapshot_id and asset.source.startswith("s3://"):
        source = source_for(asset)
        if source.versioning() != "Enabled":
            source = None  # no history to use: snapshots only
    t0 = time.monotonic()
    items = plan_items(reader, source, at)
    into_dir = isinstance(target, DirSource)
    from_directory = info.labels.get("source", "").startswith("dir://")
    unmappable: list[str] = []
    if into_dir and request.shard is not None:
        # every key, not only this worker's part: two keys in two parts can collide
        unmappable = unmappable_keys((i.key for i in items()), from_directory=from_directory)
        if not request.dry_run:
            refuse_unmappable(unmappable, target_url)
    current = _list_target(target, counters)
    if request.shard is not None:
        # one of N workers restoring into the same target: the others' objects are expected
        part = part_of(sorted(items(), key=lambda i: i.key), request.shard, int(request.shards or 1))
        items = lambda: iter(part)  # noqa: E731
        mine = {i.key for i in part}
        current = {k: o for k, o in current.items() if k in mine}
    if current and not in_place and not request.force and not request.dry_run:
        raise RestoreError(
            f"target {target_url} is not empty ({len(current)} objects)",
            hint="restore into an empty bucket/prefix or directory, or pass --force",
        )
    result = ObjectsRestoreResult(True, asset.name, info.id, target_url, dry_run=request.dry_run)

    def todo() -> Iterator[Item]:
        return (i for i in items() if not _identical(i, current.get(i.key)))

    # one pass over the tree: what to write, the space it takes, the keys a directory refuses
    # (or, for a whole snapshot of a directory into an empty one, the recorded totals)
    space = _space_needed(target) if isinstance(target, DirSource) and not request.dry_run else None
    mappable = UnmappableKeys(from_directory=from_directory) if into_dir and request.shard is None else None
    whole = (
        source is None
        and not current
        and not in_place
        and info.labels.get(KEY_PATHS_LABEL) == KEY_PATHS_VERSION
    )
    recorded = _recorded_survey(info, space) if whole and mappable and mappable.from_directory else None
    survey = recorded or _survey(items, current, in_place, space, mappable)
    unmappable = unmappable or survey.unmappable
    result.skipped, deletions = survey.skipped, survey.deletions
    result.phases["plan"] = round(time.monotonic() - t0, 3)
    if result.dry_run:
        result.plan = {
            "restore": sorted(i.key for i in todo()),
            "delete": deletions,
            "unchanged": sorted(i.key for i in items() if _identical(i, current.get(i.key))),
            "unmappable": unmappable,
        }
        result.summary = [
            f"dry run: {survey.objects - survey.skipped} objects would be restored, {len(deletions)} "
            f"deleted (delete markers), {result.skipped} already identical"
        ]
        if unmappable:
            result.ok = False
            result.summary.append(f"{len(unmappable)} keys cannot be files in this directory:")
            result.summary += [f"  UNMAPPABLE {p}" for p in unmappable]
        return result
    refuse_unmappable(unmappable, target_url)  # before anything is written
    if space is not None:
        space.refuse_short()
    if isinstance(target, DirSource):
        open_dir_target(target)  # a local OS error is permanent: never retried
    progress.start(survey.bytes)
    t0 = time.monotonic()
    writer = DirWriter(target, fresh=not current) if isinstance(target, DirSource) else None

    def restore_one(item: Item) -> None:
        def attempt() -> None:
            verified: str | None
            if item.entry is not None and writer is not None:
                # Bytes only (a directory keeps no content type or tags). What is written is
                # exactly the chunks, each checked against its keyed BLAKE3 id as it was read:
                # hashing the file again would add CPU, not assurance.
                written = writer.write(item.key, reader.open(item.entry))
                if written != item.entry.size:
                    raise IntegrityError(f"{item.key}: wrote {written} bytes, expected {item.entry.size}")
                return
            if writer is not None:  # from the source's history, into a directory
                assert source is not None and item.version is not None
                body, _ = source.open_with_info(item.version)
                writer.write(item.key, iter_chunks(body))
                return
            if item.entry is not None:
                meta = item.entry.meta
                expected = item.entry.sha256
                verified = target.upload(
                    item.key,
                    ChunkStream(reader.open(item.entry)),
                    meta.get("content_type"),
                    dict(meta.get("metadata") or {}),
                    dict(meta.get("tags") or {}),
                    size=item.entry.size,
                    sha256=expected,
                )
            else:
                assert source is not None and item.version is not None
                body, head = source.open_with_info(item.version)
                target.upload(item.key, body, head.content_type, head.metadata, head.tags)
                expected, verified = "", None
            if expected and (verified or target.sha256_of(item.key)) != expected:
                raise IntegrityError(f"{item.key} does not match its recorded SHA-256 after upload")

        try:
            with_retries(f"restoring {item.key}", attempt, counters)
        except (IntegrityError, RestoreError, OSError) as exc:
            result.failed.append(f"{item.key}: {exc}")
            return
        size = _size(item)
        # reused: counts objects taken from the snapshot
        counters.add(downloaded=1, bytes_downloaded=size, reused=int(item.entry is not None))
        progress.advance(size)

    # Into a directory from the snapshot: one writer, this thread. Writing a small file
    # costs less than the interpreter's hand-offs between writers (100,000 files of 0.5-4
    # KB: 14.0 s with one, 18.9 s with two; a pool of one writer, 5.1 s against 4.1 s on
    # this thread); the pack reads are still decrypted on their own threads.
    workers = 1 if writer is not None and source is None else transfer_workers(target, asset)
    checked = mappable if recorded is not None else None  # keys the survey did not check
    tree_failed: list[Exception] = []

    def written() -> Iterator[Item]:
        try:
            for item in todo():
                if checked is not None:
                    checked.add(item.key)
                    refuse_unmappable(checked.found(), target_url)
                yield item
        except Exception as exc:
            # What the skipped survey would have refused before writing: a key no directory
            # holds, a damaged or malformed tree document. Not a store that failed to answer:
            # what was written stays for a --force run to complete.
            if recorded is not None and not isinstance(exc, StorageError):
                tree_failed.append(exc)
            raise

    def made(objects: int, size: int) -> None:
        counters.add(downloaded=objects, bytes_downloaded=size, reused=objects)
        progress.advance(size)

    def restore_data(item: Item, data: bytes) -> None:
        """Verified bytes of a snapshot object, written here (see dirbatches.py)."""
        assert writer is not None
        try:
            writer.write(item.key, [data])
        except RestoreError as exc:
            result.failed.append(f"{item.key}: {exc}")
            return
        made(1, len(data))

    try:
        with ExitStack() as stack:
            # into a fresh directory from the snapshot, the small objects go to a writer process
            slot = None
            if writer is not None and source is None:
                expected = survey.objects if survey.bytes < survey.objects * SMALL_FILE else 0
                slot = stack.enter_context(small_file_writer(writer.tree, expected))
            small: SmallObjects | None = None
            # in bounded batches, each planned in pack order: memory stays flat in the number
            # of objects, and a batch is still many packs' worth of small objects
            for batch in _batches(written(), PLAN_OBJECTS):
                with reader.planned(i.entry for i in batch if i.entry is not None):
                    small_objects = _small_objects(batch)
                    worth_it = small_objects >= WRITER_FROM
                    if small is None and slot is not None and writer is not None and worth_it:
                        out = slot.get(small_objects)  # None: none could start, the restore writes it all
                        if out is not None:
                            sender = SmallObjects(out, reader, writer, restore_one, restore_data, made)
                            small = stack.enter_context(sender)
                    if small is None:
                        in_order = reader.in_pack_order(batch, _entry_of)
                        run_batched(restore_one, in_order, workers, TRANSFER_BATCH)
                    else:
                        small.restore(reader.in_pack_order(batch, _entry_of))
                        small.settle()
        for key in deletions:
            if writer is not None:
                writer.delete(key)
            else:
                with_retries(f"deleting {key}", lambda k=key: target.delete(k), counters)
    except DiskFull:
        assert writer is not None
        raise writer.take_back(target_url) from None
    except Exception:
        # found as the tree was written, not before (the survey was skipped): into the
        # empty directory, none of it stays, as when the survey refused it
        if writer is not None and tree_failed:
            writer.tree.take_back()
        raise
    finally:
        if writer is not None:
            writer.close()
    result.phases["transfer"] = round(time.monotonic() - t0, 3)
    result.failed.sort(key=lambda line: line.partition(": ")[0])  # by key, not pack order
    result.restored, result.restored_bytes = counters.downloaded, counters.bytes_downloaded
    result.from_snapshot = counters.reused
    result.from_versions = result.restored - result.from_snapshot
    result.deleted = len(deletions)
    result.ok = not result.failed
    result.phases["total"] = round(time.monotonic() - started, 3)
    result.summary = [
        f"{asset.name}: {result.restored} objects ({format_bytes(result.restored_bytes)}) restored "
        f"into {target_url} from snapshot {info.short_id} ({result.from_snapshot} from the snapshot, "
        f"{result.from_versions} from the source's version history), {result.skipped} already identical, "
        f"{result.deleted} delete markers, {len(result.failed)} failed",
        "phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.phases.items()),
    ] + [f"  FAILED {f}" for f in result.failed[:20]]
    return result


def _recorded_survey(info: SnapshotInfo, space: SpaceNeeded | None) -> _Survey | None:
    """The survey of a whole snapshot of a directory into an empty one, from the snapshot's
    recorded totals, when the filesystem has room for them even if every file and
    directory wasted a block: the pass decodes every tree document once more (100,000
    files: 0.9 s of a 4.1 s restore). Totals that lie only bring the full-disk path (what
    was written is taken back); a key no directory holds, or a tree document that cannot
    be read, is then refused as it comes and the target emptied again."""
    stats = info.stats
    if space is None or not stats.files:
        return None
    if stats.bytes + (stats.files + stats.dirs) * space.block > space.free:
        return None
    return _Survey(objects=stats.files, bytes=stats.bytes)


def _space_needed(target: DirSource) -> SpaceNeeded:
    try:
        return SpaceNeeded(target)
    except OSError as exc:
        raise RestoreError(f"cannot reach target {target.url}: {exc.strerror or exc}") from None


def _entry_of(item: Item) -> Entry | None:
    return item.entry


def _small_objects(batch: list[Item]) -> int:
    return sum(1 for item in batch if goes_to_writer(item))


def _batches(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    while batch := list(islice(items, size)):
        yield batch


def _size(item: Item) -> int:
    return item.entry.size if item.entry else item.version.size if item.version else 0


def _identical(item: Item, current: ObjectInfo | None) -> bool:
    if current is None:
        return False
    if item.entry is not None:
        return current.size == item.entry.size and current.etag == item.entry.meta.get("etag")
    return (
        item.version is not None and current.size == item.version.size and current.etag == item.version.etag
    )
