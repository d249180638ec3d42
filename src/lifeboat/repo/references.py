"""Which blobs the repository still needs, and who needs them (for check and prune)."""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING

from lifeboat.errors import IntegrityError
from lifeboat.repo.format import snapshot_name
from lifeboat.repo.keyring import EscrowRequired
from lifeboat.repo.model import Problem, References, SnapshotInfo
from lifeboat.repo.reader import SnapshotReader
from lifeboat.repo.ref_listing import judged_objects
from lifeboat.repo.refs import logical_name

if TYPE_CHECKING:
    from lifeboat.repo.handle import RepoHandle


def collect_references(
    repo: RepoHandle,
    *,
    read_trees: bool,
    snapshots: list[SnapshotInfo] | None = None,
    keep_refused: bool = False,
    users: bool = True,
    users_of: Container[str] | None = None,
) -> References:
    """Which blobs snapshots, refs and pending shards use (``read_trees``: from the trees
    too); ``snapshots``: the repository's snapshots when the caller has just read them.
    ``keep_refused`` (prune): refused snapshots and refs that opened count as users too. No reader
    uses them, but a genuine one may be refused (its host's clock ran ahead, or a
    revocation dated back to a suspected compromise, and then valid once the clock caught
    up): prune never deletes their data on its own judgement. Without ``users`` only which
    blobs are used is kept (``References.used``), not who uses them; with ``users_of``, who
    uses only those blobs (what check names for the ones it finds missing or damaged)."""
    refs = References(record_users=users, users_of=users_of)
    refs.snapshots = repo.snapshots() if snapshots is None else snapshots
    kept = list(refs.snapshots)
    if keep_refused:
        listing = repo.snapshot_listing(use_cache=False)
        kept += [r.held for r in listing.refused if r.held is not None]
        # a header this key cannot open (sealed for a newer recovery key after a rotation,
        # written by a newer lifeboat, or damaged) needs blobs prune cannot name: it waits
        for name, problem in listing.damaged.items():
            if name == snapshot_name(name.rsplit("/", 1)[-1]):  # not a folder marker, nested junk
                refs.complete = False
                refs.problems.append(Problem("unreadable-snapshot", name, problem))
    for snap in kept:
        for tree_id in snap.tree:
            refs.add(tree_id, snap.short_id, "(tree)")
        if not read_trees:
            continue
        try:  # a per-directory tree is read one directory at a time; its subtrees are blobs too
            for entry in SnapshotReader(repo, snap).iter_entries():
                for tree_id in entry.subtree:
                    refs.add(tree_id, snap.short_id, "(tree)")
                for chunk in entry.chunks:
                    refs.add(chunk, snap.short_id, entry.path)
        except EscrowRequired:
            refs.escrowed.append(snap.short_id)
            continue
        except IntegrityError as exc:
            refs.complete = False
            refs.problems.append(
                Problem("unreadable-tree", f"snapshots/{snap.id}", str(exc), [snap.short_id])
            )
    _pending_shards(repo, refs, read_trees)
    judged = judged_objects(repo, "refs/", use_cache=False)
    held = {_logical(s.object_name) for s in judged if s.verdict and s.info is not None}
    for stored in judged:
        if stored.info is None:  # damaged: unless its name holds an authorised copy (a
            # squatter's junk beside the genuine ref), its chunks may be needed: prune waits
            if _logical(stored.object_name) not in held:
                refs.complete = False
            refs.problems.append(Problem("corrupt-ref", stored.object_name, str(stored.verdict.reason)))
            continue
        if not stored.verdict:  # used by no reader: it keeps chunks alive for prune alone
            refs.problems.append(Problem("refused-ref", stored.object_name, stored.describe()))
            # as for snapshots (keep_refused): a genuine segment pushed by a host whose clock
            # ran ahead is refused until the clock catches up, and must still be fetchable then
            if not (keep_refused and stored.info.opened):
                continue
        if not stored.info.opened:  # another writer's sealed ref: its chunks are unknown here
            refs.complete = False
            continue
        for chunk in stored.info.chunks:
            refs.add(chunk, "ref", f"{stored.info.namespace}/{stored.info.name}")
    return refs


def _logical(object_name: str) -> tuple[str, str] | None:
    try:
        return logical_name(object_name)
    except IntegrityError:
        return None


def _pending_shards(repo: RepoHandle, refs: References, read_trees: bool) -> None:
    """Shards of a sharded backup that is not committed yet need their chunks too."""
    from lifeboat.repo.shards import pending_shards, shard_entries

    try:
        pending = list(pending_shards(repo))
    except IntegrityError as exc:
        refs.complete = False
        refs.problems.append(Problem("corrupt-record", "records/shards", str(exc)))
        return
    for name, result in pending:
        for tree_id in result["tree"]:
            refs.add(tree_id, "shard", f"{name} (tree)")
        if not read_trees:
            continue
        try:
            entries = shard_entries(repo, result)
        except IntegrityError as exc:
            refs.complete = False
            refs.problems.append(Problem("unreadable-tree", f"records/shards/{name}", str(exc)))
            continue
        for entry in entries:
            for chunk in entry.get("chunks", []):
                refs.add(chunk, "shard", f"{name}:{entry['path']}")
