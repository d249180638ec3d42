"""Prune lists every kept pack with every location an index file going says of it, even
when an index file staying lists that pack too (one whose packs are exactly the ones to
list again is no substitute: it may list only part of them)."""

from __future__ import annotations

from lifeboat.repo import Repository
from lifeboat.repo import prune as prune_module
from lifeboat.storage import open_storage
from tests.repo.test_history import assert_check_clean, backup, content, index_names


def test_a_file_staying_that_lists_part_of_a_pack_does_not_replace_its_listing(tmp_path, monkeypatch):
    """F lists exactly {P} (one of P's blobs); G lists P's other blobs and every other pack,
    all of them repacked. P is listed again with every location, so deleting G loses
    nothing (a shortcut kept F as P's whole listing: restores then missed P's other blobs)."""
    from lifeboat.repo.consolidate import read_index_files
    from lifeboat.repo.index import write_index

    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    with repo.backup("app", "files") as session:
        for n in range(40):
            session.add_bytes(f"file-{n}.bin", content(n, size=2000))
        kept = session.commit()
    owner = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "prune-cache")
    files, _ = read_index_files(owner, index_names(storage))
    packs = {pack["id"]: pack for entries in files.values() for pack in entries}
    needed = {c for e in owner.reader(kept).entries() for c in e.chunks}
    p_id = next(p for p, pack in packs.items() if sum(b[0] in needed for b in pack["blobs"]) >= 2)
    first, *rest = sorted(packs[p_id]["blobs"])
    others = [pack for p, pack in packs.items() if p != p_id]
    old_files = index_names(storage)
    write_index(storage, [{"id": p_id, "blobs": [first]}], owner.metadata)
    write_index(storage, [{"id": p_id, "blobs": rest}, *others], owner.metadata)
    for name in old_files:
        storage.delete(name)

    real = prune_module.plan_repack

    def plan_all_but_p(*args, **kwargs):
        plan = real(*args, **kwargs)
        plan.packs = [p for p in packs if p != p_id]
        return plan

    monkeypatch.setattr(prune_module, "plan_repack", plan_all_but_p)
    report = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "prune-2").prune()
    assert report.packs_repacked == len(others)

    reader = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "reader-cache")
    target = tmp_path / "out"
    reader.reader(kept).restore_tree(target)
    assert all((target / f"file-{n}.bin").read_bytes() == content(n, size=2000) for n in range(40))
    assert_check_clean(reader)


def test_the_same_without_a_repack(tmp_path):
    """The same with nothing repacked: G lists P's other blobs and a pack nothing uses."""
    from lifeboat.repo.consolidate import read_index_files
    from lifeboat.repo.index import write_index

    storage = open_storage(f"file://{tmp_path / 'repo'}")
    repo, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    with repo.backup("app", "files") as session:
        for n in range(40):
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
    others = [pack for p, pack in packs.items() if p != p_id]
    old_files = index_names(storage)
    write_index(storage, [{"id": p_id, "blobs": [first]}], owner.metadata)
    write_index(
        storage, [{"id": p_id, "blobs": rest}, *[p for p in others if p["id"] in gone_packs]], owner.metadata
    )
    write_index(storage, [p for p in others if p["id"] not in gone_packs], owner.metadata)
    for name in old_files:
        storage.delete(name)
    storage.delete(f"snapshots/{gone.id}")

    report = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "prune-2").prune()
    assert report.packs_removed >= 1
    reader = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "reader-cache")
    target = tmp_path / "out"
    reader.reader(kept).restore_tree(target)
    assert all((target / f"file-{n}.bin").read_bytes() == content(n, size=2000) for n in range(40))
    assert_check_clean(reader)
