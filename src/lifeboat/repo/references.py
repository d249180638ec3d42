"""Which blobs the repository still needs, and who needs them (for check and prune)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lifeboat.errors import IntegrityError, NotFoundError
from lifeboat.repo.model import Problem, SnapshotInfo
from lifeboat.repo.reader import SnapshotReader

if TYPE_CHECKING:
    from lifeboat.repo.repository import Repository


@dataclass
class References:
    """blob id -> the (snapshot short id, path) pairs that use it."""

    users: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    snapshots: list[SnapshotInfo] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    complete: bool = True  # False when some tree could not be read (prune must not delete then)

    def add(self, blob_id: str, snapshot: str, path: str) -> None:
        self.users.setdefault(blob_id, []).append((snapshot, path))


def collect_references(repo: Repository, *, read_trees: bool) -> References:
    refs = References()
    refs.snapshots = repo.snapshots()
    for snap in refs.snapshots:
        for tree_id in snap.tree:
            refs.add(tree_id, snap.short_id, "(tree)")
        if not read_trees:
            continue
        try:
            entries = SnapshotReader(repo, snap).entries()
        except IntegrityError as exc:
            refs.complete = False
            refs.problems.append(
                Problem("unreadable-tree", f"snapshots/{snap.id}", str(exc), [snap.short_id])
            )
            continue
        for entry in entries:
            for chunk in entry.chunks:
                refs.add(chunk, snap.short_id, entry.path)
    _pending_shards(repo, refs, read_trees)
    for namespace_obj in repo.storage.list("refs/"):
        name = namespace_obj.name
        try:
            ref = repo._decode_ref(name, repo.storage.get(name))
        except NotFoundError:
            continue
        except IntegrityError as exc:
            refs.complete = False
            refs.problems.append(Problem("corrupt-ref", name, str(exc)))
            continue
        for chunk in ref.chunks:
            refs.add(chunk, "ref", f"{ref.namespace}/{ref.name}")
    return refs


def _pending_shards(repo: Repository, refs: References, read_trees: bool) -> None:
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
