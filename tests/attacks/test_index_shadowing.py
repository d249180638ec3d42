"""A compromised backup host (its writer key file + storage credentials) of asset ``web``
breaks the restores of another writer's asset ``app``. Pack trailers are sealed for their
writer and the recovery side, so the host cannot read where app's blobs are; the test hands it every
blob's id, offset and length anyway (read with the recovery key: an attacker with more than
a host has). An index file names no asset, so any authorised writer may sign one. It
signs an index pointing each of app's blob ids at another blob's location, its name ground
to sort first, so its locations are the ones tried first. Readers fall back to a blob's
other locations when one fails authentication, ``check --read-data`` names the
misdirection without blaming the healthy packs, and prune's repack never trusts a listing
the pack's own trailer does not confirm."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lifeboat.repo.format import index_name
from lifeboat.repo.index import encode_index
from tests.attacks.test_forged_history import GENUINE, Site, attacker, make_site
from tests.harness import Clock
from tests.harness.packs import StoredBlob, stored_blob_table


@pytest.fixture
def site(tmp_path: Path, clock: Clock) -> Site:
    return make_site(tmp_path, clock)


Blob = StoredBlob  # pack, blob id, type, offset, length, raw length


def shifted(table: list[Blob], i: int) -> list[object]:
    """Each blob id at the next blob's location (another pack, or another place in its own)."""
    pack, _, btype, offset, length, raw = table[(i + 1) % len(table)]
    return [pack, table[i][1], btype, offset, length, raw]


def resized(table: list[Blob], i: int) -> list[object]:
    """The genuine location with a wrong plaintext size."""
    pack, blob_id, btype, offset, length, raw = table[i]
    return [pack, blob_id, btype, offset, length, raw + 1]


def out_of_range(table: list[Blob], i: int) -> list[object]:
    """A range far past the pack's end (S3 answers 416, a local file short bytes)."""
    pack, blob_id, btype, _, length, raw = table[i]
    return [pack, blob_id, btype, 1 << 40, length, raw]


def missing_pack(table: list[Blob], i: int) -> list[object]:
    """A pack that does not exist."""
    _, blob_id, btype, offset, length, raw = table[i]
    return ["0" * 64, blob_id, btype, offset, length, raw]


@pytest.mark.parametrize("forgery", [shifted, resized, out_of_range, missing_pack])
def test_another_writers_forged_index_does_not_break_a_genuine_restore(
    site: Site, forgery: Callable[[list[Blob], int], list[object]]
) -> None:
    site.backup("app")
    site.backup("web")
    repo = attacker(site, site.issue_writer("web-1", "web"))
    table = stored_blob_table(f"file://{site.root / 'repo'}", site.root / "recovery.key")
    entries: dict[str, list[list[object]]] = {}
    for i in range(len(table)):
        pack, *blob = forgery(table, i)
        entries.setdefault(str(pack), []).append(blob)
    packs = [{"id": p, "blobs": b} for p, b in entries.items()]
    first = min(obj.name for obj in repo.storage.list("index/"))
    while True:
        index_id, data = encode_index(packs, repo.metadata)  # type: ignore[arg-type]
        if index_name(index_id) < first:
            break
    repo.storage.put(index_name(index_id), data)
    assert site.restored("app", "config.txt") == GENUINE

    problems = site.check_problems_read_data()
    kinds = {str(p["kind"]) for p in problems}
    assert "corrupt-index" in kinds, problems
    assert not kinds & {"corrupt-chunk", "missing-chunk", "corrupt-pack"}, problems  # no healthy pack blamed
    # A prune that repacks every small pack keeps what the genuine snapshots need.
    site.run("prune", "--repack-small", "--max-unused", "0%", *site.recovery)
    assert site.restored("app", "config.txt") == GENUINE
    assert site.restored("web", "config.txt") == GENUINE
