"""Signed refs through the repository API (issue #14): a ref counts only when its writer may
write the namespace's asset; a squatted name gets the genuine ref side by side; two
authorised writers disagreeing about one name fail loudly; refused refs keep no chunk alive."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeboat.errors import AlreadyExistsError, KeyError_, NotFoundError
from lifeboat.repo import Repository
from lifeboat.repo.format import ref_name
from lifeboat.repo.ref_listing import ref_listing
from lifeboat.services.keys import issue_writer_key
from lifeboat.storage import open_storage

NS = "wal/db"
SEG = "000000010000000000000003"
HISTORY = "00000002.history"


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Repository, Repository, Repository]:
    """(the db host's handle, the recovery side, a host whose writer may write only ``web``)."""
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    genuine, _, recovery = Repository.create(storage, writer="db-1", cache_dir=tmp_path / "cache")
    reader = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "reader-cache")
    web_key, _, _ = issue_writer_key(reader, "web-1", ["web"])
    squatter = Repository.open(open_storage(f"file://{tmp_path / 'repo'}"), backup_key=web_key)
    return genuine, reader, squatter


def stored_names(repo: Repository) -> list[str]:
    return sorted(o.name for o in repo.storage.list(f"refs/{NS}/"))


def test_a_squatted_name_stores_the_genuine_ref_beside_it_and_readers_keep_the_genuine(
    repos: tuple[Repository, Repository, Repository],
) -> None:
    genuine, reader, squatter = repos
    squatter.require_writer_for = lambda asset: None  # type: ignore[method-assign]  # its own code
    planted = squatter.put_ref(NS, SEG, b"attacker" * 100)  # signed, but not a writer of db
    assert not planted.squatters
    with pytest.raises(NotFoundError, match="web-1 refused: writer may not write this asset"):
        reader.get_ref(NS, SEG)
    assert reader.list_ref_names(NS) == []

    pushed = genuine.put_ref(NS, SEG, b"genuine" * 100)
    [squatted] = pushed.squatters
    assert "web-1" in squatted and "may not write this asset" in squatted
    names = stored_names(genuine)
    assert len(names) == 2 and names[0] == ref_name(NS, SEG) and names[1].startswith(ref_name(NS, SEG) + "~")
    assert reader.read_ref(reader.get_ref(NS, SEG)) == b"genuine" * 100
    assert reader.list_ref_names(NS) == [SEG]
    assert genuine.put_ref(NS, SEG, b"genuine" * 100).squatters == [squatted]  # idempotent
    assert len(stored_names(genuine)) == 2

    report = reader.check()
    refused = [p for p in report.problems if p.kind == "refused-ref"]
    assert [p.object for p in refused] == [ref_name(NS, SEG)]
    assert "web-1" in refused[0].message
    assert [r.object_name for r in reader.refused_refs()] == [ref_name(NS, SEG)]


def test_two_authorised_writers_with_different_content_fail_naming_both(
    repos: tuple[Repository, Repository, Repository],
) -> None:
    genuine, reader, _ = repos
    second_key, _, _ = issue_writer_key(reader, "db-2", ["db"])
    second = Repository.open(genuine.storage, backup_key=second_key)
    genuine.put_ref(NS, SEG, b"genuine" * 100)
    with pytest.raises(
        AlreadyExistsError, match="different content by writer db-1 \\(this push: writer db-2\\)"
    ):
        second.put_ref(NS, SEG, b"other" * 100)
    assert stored_names(genuine) == [ref_name(NS, SEG)]
    assert second.put_ref(NS, SEG, b"genuine" * 100).digest  # same content: idempotent


def test_unsigned_garbage_under_a_name_does_not_block_the_push(
    repos: tuple[Repository, Repository, Repository],
) -> None:
    genuine, reader, _ = repos
    genuine.storage.put(ref_name(NS, SEG), b"not a ref at all")  # storage credentials only
    pushed = genuine.put_ref(NS, SEG, b"genuine" * 100)
    assert pushed.squatters and "damaged" in pushed.squatters[0]
    assert reader.read_ref(reader.get_ref(NS, SEG)) == b"genuine" * 100
    assert reader.list_ref_names(NS) == [SEG]
    reader.prune()  # the junk beside the genuine ref does not stop prune
    assert reader.read_ref(reader.get_ref(NS, SEG)) == b"genuine" * 100
    reader.forget_refs(NS, [SEG])  # expiry removes the copies with the name
    assert stored_names(genuine) == []


def test_another_writers_ref_shows_its_name_and_time_only_and_the_recovery_side_reads_it_all(
    tmp_path: Path,
) -> None:
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    genuine, _, recovery = Repository.create(storage, writer="db-1", cache_dir=tmp_path / "db-1")
    labels = {"kind": "history", "parent": "1", "switch_lsn": "0/3000000"}
    content = b"1\t0/3000000\tno recovery target\n"
    pushed = genuine.put_ref(NS, HISTORY, content, labels=labels)
    assert genuine.get_ref(NS, HISTORY).labels == labels  # its writer reads its own
    admin = Repository.open(storage, recovery_key=recovery, cache_dir=tmp_path / "admin")
    second_key, _, _ = issue_writer_key(admin, "db-2", ["db"])
    host_cache = tmp_path / "db-2"  # the standby's state dir, shared by its commands
    second = Repository.open(storage, backup_key=second_key, cache_dir=host_cache)
    seen = second.get_ref(NS, HISTORY)
    assert (seen.opened, seen.size, seen.chunks, seen.labels) == (False, 0, [], {})
    assert (seen.digest, seen.time) == (pushed.digest, pushed.time)  # judged and compared by these
    assert second.list_ref_names(NS) == [HISTORY]  # cached there as unopened
    with pytest.raises(KeyError_, match="sealed by another writer"):
        second.read_ref(seen)
    assert second.put_ref(NS, HISTORY, content).digest == pushed.digest  # the same push: no conflict
    # the recovery side on that host opens it again rather than trusting the cached entry
    on_host = Repository.open(storage, recovery_key=recovery, cache_dir=host_cache)
    [chosen] = ref_listing(on_host, NS).chosen.values()
    assert chosen.opened and chosen.chunks == pushed.chunks and chosen.labels == labels
    assert on_host.read_ref(chosen) == content
