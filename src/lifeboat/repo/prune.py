"""`prune`: delete packs no snapshot or ref needs. The only deleter of data; honours locks.

Order matters for crash safety: first a new index listing every kept pack that an index
file about to be deleted lists, or that no untouched one does (repacked packs are indexed as
they are stored), then the other old index files, and only then packs that no remaining
index file lists. A crash at any step leaves every remaining index entry pointing at an
existing pack, or at a pack whose blobs nothing references (and writers drop index entries
of vanished packs on load).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lifeboat.errors import CheckFailed, LockedError, NotFoundError
from lifeboat.memory import release_free_memory
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo.format import index_name, pack_name
from lifeboat.repo.index import PackedEntries, PackUsage, write_index
from lifeboat.repo.locks import RepoLock
from lifeboat.repo.model import PruneReport
from lifeboat.repo.references import collect_references
from lifeboat.repo.repack import RepackOptions, RepackResult, escrowed_pack, plan_repack, repack

# A temp file this old cannot belong to a live writer (a put takes seconds).
INCOMPLETE_AGE = 6 * 3600.0

if TYPE_CHECKING:
    from lifeboat.repo.handle import RepoHandle


def prune_repository(
    repo: RepoHandle,
    *,
    dry_run: bool = False,
    progress: ProgressSink = NO_PROGRESS,
    repack_options: RepackOptions | None = None,
) -> PruneReport:
    """Deletes unreferenced packs in a crash-safe order, under the exclusive lock."""
    repo.require_reader("prune")
    report = PruneReport()
    with RepoLock(repo.storage, exclusive=True, operation="prune") as lock:
        index = repo.load_index_for_writing()
        if index.damaged:  # the packs it lists would count as orphans, and go
            raise CheckFailed(
                f"prune stopped: index file {min(index.damaged)} cannot be read with this key "
                f"({index.damaged[min(index.damaged)]}), so nothing is deleted",
                hint="prune with the newest recovery key and lifeboat, "
                "or run 'lifeboat check' and repair first",
            )
        refs = collect_references(repo, read_trees=True, keep_refused=True, users=False)
        if not refs.complete:
            raise CheckFailed(
                "prune stopped: some snapshot headers, trees or refs are unreadable, so nothing is deleted",
                hint="prune with the newest recovery key and lifeboat, or run 'lifeboat check --read-data' "
                "and repair first",
            )
        needed = refs.used
        packs = dict(index.packs())  # a copy: the index is let go below
        usage, report.unreferenced_chunks = index.pack_usage(needed)
        report.packs_total = len(packs)
        stored = {obj.name.rsplit("/", 1)[-1]: obj.size for obj in repo.storage.list("data/")}
        unused = [p for p in packs if not usage[p].needed]
        if refs.escrowed:  # key material's chunks are unknown without the shares: keep its packs
            unused = [p for p in unused if not escrowed_pack(repo, p)]
        orphans = [p for p in stored if p not in packs]
        removed = set(unused)
        kept_ids = [p for p in packs if p not in removed]
        plan = plan_repack(repo, index, usage, kept_ids, stored, repack_options or RepackOptions())
        report.repack_kept_locked = plan.locked
        if dry_run:
            report.packs_removed = len(unused) + len(orphans)
            report.bytes_removed = sum(stored.get(p, 0) for p in unused + orphans)
            report.packs_repacked = len(plan.packs)
            return report
        # The whole index is let go before the repack: held beside the packs being copied,
        # it made a heavy prune's peak (a million small files). What the new index files of
        # the packs staying will list is taken out of it first, as records (57 bytes a
        # blob), and written once the used ids are dropped too.
        in_plan = set(plan.packs)
        listing = _KeptListing.of(index.files, [p for p in kept_ids if p not in in_plan])
        kept = PackedEntries.of(index.pack_entries(listing.rewritten, usage))
        files = {name: list(ids) for name, ids in index.files.items()}
        del index
        repo.release_index()
        release_free_memory()
        repacked = repack(repo, usage, plan, needed, progress)
        del refs, needed  # what follows writes index entries: room for them
        release_free_memory()
        report.packs_repacked = len(repacked.repacked)
        report.bytes_repacked = repacked.bytes_written
        done = set(repacked.repacked)
        left = [p for p in plan.packs if p not in done]  # damaged: kept as they are
        kept_index = _write_kept_index(repo, kept)
        del kept
        new_index = repacked.index_files | kept_index | _index_rest(repo, repacked, left, usage, files)
        repacked.new_packs = []  # indexed: as lists, up to an index file's worth of blobs
        still_listed: set[str] = set()
        lock.ensure_held()  # a backup that judged it stale may have started and reused these packs
        for name, pack_ids in files.items():
            if name in new_index or name in listing.untouched:
                continue
            try:
                repo.storage.delete(name)
            except LockedError:
                report.locked_objects.append(name)
                still_listed.update(pack_ids)
        for pack_id in unused + orphans + repacked.repacked:
            if pack_id in still_listed:
                report.packs_kept_locked += 1
                continue
            try:
                repo.storage.delete(pack_name(pack_id))
                report.packs_removed += 1
                report.bytes_removed += stored.get(pack_id, 0)
            except LockedError:
                report.packs_kept_locked += 1
                report.locked_objects.append(pack_name(pack_id))
            except NotFoundError:
                pass
            progress.advance(1)
        report.incomplete_removed = repo.storage.sweep_incomplete(INCOMPLETE_AGE)
        del usage
        release_free_memory()
        repo.index(refresh=True)
    return report


@dataclass
class _KeptListing:
    """Index files that list only packs staying as they are stay too (with their writer's
    seal and signature, so that writer still reads them for dedup); the packs staying that
    no such file lists, or that a file going lists, go into new index files signed by this
    handle's key, each with every location the index holds in it, even a pack a file
    staying lists too: the file deleted may list blobs of it that the other does not."""

    untouched: set[str]
    rewritten: list[str]

    @classmethod
    def of(cls, files: Mapping[str, list[str]], staying: list[str]) -> _KeptListing:
        stay = set(staying)
        untouched = {n for n, ids in files.items() if set(ids) <= stay}
        covered = {p for n in untouched for p in files[n]}
        going = {p for n, ids in files.items() if n not in untouched for p in ids}
        return cls(untouched, [p for p in staying if p not in covered or p in going])


def _index_rest(
    repo: RepoHandle,
    repacked: RepackResult,
    left: list[str],
    usage: Mapping[str, PackUsage],
    files: Mapping[str, list[str]],
) -> set[str]:
    """The index files of what the repack stored but did not index yet, and of the packs it
    was to copy but left (damaged: kept, so listed again as the index lists them, read
    again for them: only then). A file listing one of those that the second load did not
    read (listed but not served: it may say what the new file cannot) is returned too, so
    that it is not deleted."""
    # the new packs first: the reload then finds them listed (it adopts no orphan either)
    written = set(write_index(repo.storage, repacked.new_packs, repo.metadata, repo.index_cache))
    if not left:
        return {index_name(i) for i in written}
    index = repo.index(refresh=True)
    written |= set(
        write_index(repo.storage, index.pack_entries(left, usage), repo.metadata, repo.index_cache)
    )
    listing_left = {name for name, ids in files.items() if not set(ids).isdisjoint(left)}
    unread = listing_left - set(index.files)
    del index
    repo.release_index()
    return {index_name(i) for i in written} | unread


def _write_kept_index(repo: RepoHandle, kept: PackedEntries) -> set[str]:
    """The index files of the packs staying that are listed again, with every location the
    index listed in each. Never an index file already there, even one listing exactly these
    packs: a pack is listed again only when no file staying lists it or a file going does,
    and what the file going says of it may be what the one staying does not (a prune with
    nothing to do lists nothing again, so writes nothing)."""
    if not kept.packs:
        return set()
    # put-if-absent: the same bytes (same hash) may be there from a prune killed before it
    # finished; the entries are made a pack at a time and written a file at a time
    written = write_index(repo.storage, kept.each_entry(), repo.metadata, repo.index_cache)
    return {index_name(i) for i in written}
