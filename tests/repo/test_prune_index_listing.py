"""Prune lists every pack it keeps with every location the index files it deletes said of
it, and leaves no index file listing a pack it deleted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifeboat.repo import Repository, SnapshotInfo
from lifeboat.repo import prune as prune_module
from lifeboat.repo import repack as repack_module
from lifeboat.repo.consolidate import read_index_files
from lifeboat.repo.index import write_index
from lifeboat.repo.model import PruneReport
from lifeboat.storage import open_storage
from lifeboat.storage.base import Storage
from tests.repo.test_history import (
    assert_check_clean,
    assert_restores,
    backup,
    content,
    damage_file,
    index_names,
    pack_names,
)


@dataclass
class SplitPack:
    """A repository whose snapshot ``kept`` has two or more blobs in pack ``p_id``, and whose
    snapshot ``gone`` has packs of its own (``gone_packs``), ready to be listed anew."""

    storage: Storage
    recovery: Any
    kept: SnapshotInfo
    gone: SnapshotInfo
    owner: Repository
    packs: dict[str, dict[str, Any]]
    p_id: str
    first: list[Any]  # one of P's blobs
    rest: list[list[Any]]  # the others
    gone_packs: set[str]

    @property
    def others(self) -> list[dict[str, Any]]:
        return [pack for p, pack in self.packs.items() if p != self.p_id]

    def of_gone(self, gone: bool) -> list[dict[str, Any]]:
        return [p for p in self.others if (p["id"] in self.gone_packs) == gone]

    def relist(self, *files: list[dict[str, Any]]) -> None:
        """The index as these files, in place of the ones there."""
        old = index_names(self.storage)
        for entries in files:
            write_index(self.storage, entries, self.owner.metadata)
        for name in old:
            self.storage.delete(name)

    def prune(self, cache: Path) -> PruneReport:
        return Repository.open(self.storage, recovery_key=self.recovery, cache_dir=cache).prune()

    def assert_kept_restores(self, tmp_path: Path) -> None:
        reader = Repository.open(
            self.storage, recovery_key=self.recovery, cache_dir=tmp_path / "reader-cache"
        )
        target = tmp_path / "out"
        reader.reader(self.kept).restore_tree(target)
        assert all((target / f"file-{n}.bin").read_bytes() == content(n, size=2000) for n in range(40))
        assert_check_clean(reader)


def split_pack(tmp_path: Path) -> SplitPack:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    with repo.backup("app", "files") as session:
        for n in range(40):  # more files than open packs: some pack holds two or more
            session.add_bytes(f"file-{n}.bin", content(n, size=2000))
        kept = session.commit()
    gone = backup(repo, 99, asset="other")
    owner = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "prune-cache")
    files, _ = read_index_files(owner, index_names(storage))
    packs = {pack["id"]: pack for entries in files.values() for pack in entries}
    needed = {c for e in owner.reader(kept).entries() for c in e.chunks}
    p_id = next(p for p, pack in packs.items() if sum(b[0] in needed for b in pack["blobs"]) >= 2)
    first, *rest = sorted(packs[p_id]["blobs"])
    gone_blobs = [c for e in owner.reader(gone).entries() for c in e.chunks] + gone.tree
    gone_packs = {owner.index().get(c).pack for c in gone_blobs}
    gone_packs -= {p for p, pack in packs.items() if any(b[0] in needed for b in pack["blobs"])}
    assert gone_packs
    return SplitPack(storage, recovery, kept, gone, owner, packs, p_id, first, rest, gone_packs)


def plan_only(monkeypatch, pack_ids: list[str]) -> None:
    """Prune's plan made to repack exactly these packs (what a real plan does when the
    others are large and fully used and these small)."""
    real = prune_module.plan_repack

    def plan(*args, **kwargs):
        made = real(*args, **kwargs)
        made.packs = list(pack_ids)
        return made

    monkeypatch.setattr(prune_module, "plan_repack", plan)


def test_a_file_staying_that_lists_part_of_a_pack_with_a_file_going_keeps_every_location(tmp_path):
    """Pack P is listed by two index files: F (staying: it lists only packs that stay) with
    one of P's blobs, and G with the others and a pack no snapshot needs any more. Prune
    deletes G: what G said of P is written again, or the snapshot using those blobs could
    not restore."""
    sp = split_pack(tmp_path)
    sp.relist(
        [{"id": sp.p_id, "blobs": [sp.first]}, *sp.of_gone(False)],
        [{"id": sp.p_id, "blobs": sp.rest}, *sp.of_gone(True)],
    )
    sp.storage.delete(f"snapshots/{sp.gone.id}")  # what forget does
    assert sp.prune(tmp_path / "prune-2").packs_removed >= 1
    sp.assert_kept_restores(tmp_path)


def test_a_file_listing_exactly_the_packs_to_list_again_is_not_their_listing(tmp_path):
    """The same, with F listing P alone (one of its blobs) and the packs staying in a third
    file: F lists exactly the packs to list again, and is still not their whole listing (a
    shortcut took it for one: restores then missed P's other blobs)."""
    sp = split_pack(tmp_path)
    sp.relist(
        [{"id": sp.p_id, "blobs": [sp.first]}],
        [{"id": sp.p_id, "blobs": sp.rest}, *sp.of_gone(True)],
        sp.of_gone(False),
    )
    sp.storage.delete(f"snapshots/{sp.gone.id}")
    assert sp.prune(tmp_path / "prune-2").packs_removed >= 1
    sp.assert_kept_restores(tmp_path)


def test_the_same_when_the_packs_beside_it_are_repacked(tmp_path, monkeypatch):
    """F lists P alone (one of its blobs); G lists P's other blobs and every other pack, all
    of them repacked: P is listed again with every location."""
    sp = split_pack(tmp_path)
    sp.relist([{"id": sp.p_id, "blobs": [sp.first]}], [{"id": sp.p_id, "blobs": sp.rest}, *sp.others])
    plan_only(monkeypatch, [p["id"] for p in sp.others])
    assert sp.prune(tmp_path / "prune-2").packs_repacked == len(sp.others)
    sp.assert_kept_restores(tmp_path)


def _listed_packs(storage, recovery, cache):
    idx = Repository.open(storage, recovery_key=recovery, cache_dir=cache).index()
    return {p for ids in idx.files.values() for p in ids}


def test_an_adopted_orphan_that_prune_deletes_leaves_no_index_file_listing_it(tmp_path, monkeypatch):
    """A killed backup's packs (stored, listed by no index file) are adopted by the load
    prune makes, which indexes them; nothing uses them, so prune deletes them, and the
    index file it wrote for them goes too (it stayed, listing deleted packs)."""
    monkeypatch.setenv("LIFEBOAT_INDEX_FILES_MAX", "0")
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    snaps = {n: backup(repo, n) for n in range(3)}
    before = set(pack_names(storage))
    gone = backup(repo, 99, asset="other")
    orphan_packs = {p.rsplit("/", 1)[-1] for p in set(pack_names(storage)) - before}
    owner = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "c1")
    files, _ = read_index_files(owner, index_names(storage))
    old = index_names(storage)
    keep = [pack for entries in files.values() for pack in entries if pack["id"] not in orphan_packs]
    write_index(storage, keep, owner.metadata)
    for name in old:
        storage.delete(name)
    storage.delete(f"snapshots/{gone.id}")  # the killed backup never committed

    Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "c2").prune()
    stored = {p.rsplit("/", 1)[-1] for p in pack_names(storage)}
    dangling = _listed_packs(storage, recovery, tmp_path / "c3") - stored
    assert not dangling, f"index files list {len(dangling)} deleted pack(s)"
    assert_restores(
        Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "c4"), snaps, tmp_path / "out"
    )


def test_key_material_packs_do_not_make_a_lone_small_pack_repacked_by_every_prune(tmp_path, monkeypatch):
    """Escrowed packs (key material, never re-sealed) do not count towards the small packs
    that make a repack worth it: a lone ordinary small pack was repacked (into another
    small pack) by every prune."""
    monkeypatch.setenv("LIFEBOAT_INDEX_FILES_MAX", "0")
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    for n in range(6):
        backup(repo, n, asset="keys")
    escrowed = {p.rsplit("/", 1)[-1] for p in pack_names(storage)}
    assert len(escrowed) >= 10
    backup(repo, 100)
    fake = lambda repo, p: p in escrowed  # noqa: E731  (simulated key material packs)
    monkeypatch.setattr(repack_module, "escrowed_pack", fake)
    monkeypatch.setattr(prune_module, "escrowed_pack", fake)
    owner = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "p")
    counts = [owner.prune().packs_repacked for _ in range(3)]
    assert counts[1:] == [0, 0], counts


def test_a_damaged_pack_to_repack_and_a_pack_staying_keep_every_location(tmp_path, monkeypatch):
    """D (to repack, damaged) and S (staying) are listed by one file G, S partly by a file
    F staying too, every other pack is repacked: both keep every blob location."""
    monkeypatch.setenv("LIFEBOAT_INDEX_FILES_MAX", "0")
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    for n in range(8):
        backup(repo, n)
    owner = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "c1")
    files, _ = read_index_files(owner, index_names(storage))
    packs = {pack["id"]: pack for entries in files.values() for pack in entries}
    ids = sorted(packs, key=lambda p: -len(packs[p]["blobs"]))
    s_id = ids[0]
    d_id = ids[1]
    first, *rest = sorted(packs[s_id]["blobs"])
    old = index_names(storage)
    write_index(storage, [{"id": s_id, "blobs": [first]}], owner.metadata)
    write_index(storage, [{"id": s_id, "blobs": rest}, packs[d_id]], owner.metadata)
    write_index(storage, [packs[p] for p in ids[2:]], owner.metadata)
    for name in old:
        storage.delete(name)
    damage_file(next((tmp_path / "repo" / "data").rglob(d_id)))
    plan_only(monkeypatch, [x for x in packs if x != s_id])
    Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "c2").prune()
    reader = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "c3")
    assert d_id in reader.index().packs() and s_id in reader.index().packs()
    dn = reader.index().blobs_by_pack()
    assert sorted(dn[s_id]) == sorted(b[0] for b in packs[s_id]["blobs"])
    assert sorted(dn[d_id]) == sorted(b[0] for b in packs[d_id]["blobs"])
    stored = {p.rsplit("/", 1)[-1] for p in pack_names(storage)}
    assert _listed_packs(storage, recovery, tmp_path / "c4") <= stored


def test_a_file_listing_a_damaged_pack_that_the_reload_did_not_read_is_not_deleted():
    """The damaged pack's new listing comes from a second load of the index; a file listing
    it that this load did not read (listed, then not served) may hold locations the new
    file lacks, so prune keeps it (pure logic: a fake handle and index)."""
    from lifeboat.repo.repack import RepackResult

    class ReloadedIndex:
        def __init__(self):
            self.files = {"index/a": ["damaged", "kept"]}  # index/b was listed, not read this time

        def pack_entries(self, pack_ids, usage):
            return iter([])

    class Handle:
        storage = metadata = index_cache = None

        def index(self, refresh=False):
            return ReloadedIndex()

        def release_index(self):
            pass

    files = {"index/a": ["damaged", "kept"], "index/b": ["damaged"], "index/c": ["other"]}
    kept = prune_module._index_rest(Handle(), RepackResult(), ["damaged"], {}, files)
    assert kept == {"index/b"}
