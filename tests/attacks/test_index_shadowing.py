"""A compromised backup host (its writer key file + storage credentials) opens its own sealed
index files, so it knows its past blob ids; it writes a signed index (an index names no
asset: any authorised writer may sign one) pointing each at another blob's location, its
name ground to sort first, so its locations win over the genuine ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeboat.repo.format import index_name
from lifeboat.repo.index import encode_index
from tests.attacks.test_forged_history import GENUINE, Site, attacker, make_site
from tests.harness import Clock


@pytest.fixture
def site(tmp_path: Path, clock: Clock) -> Site:
    return make_site(tmp_path, clock)


@pytest.mark.xfail(
    strict=True,
    reason="known hole (review of the #14 merge): the first listed location of a blob wins and "
    "readers do not fall back to another index's location when it fails authentication",
)
def test_a_forged_index_sorting_first_does_not_break_a_genuine_restore(site: Site) -> None:
    site.backup("app")
    (site.root / "app" / "big.txt").write_bytes(b"x" * 5000)
    site.backup("app")
    repo = attacker(site, site.root / "keys" / "backup.key")
    index = repo.index()
    blobs = sorted(index.blob_ids())
    locs = [index.get(b) for b in blobs]
    # every blob pointed at another genuine blob's location (valid ranges, wrong content)
    entries: dict[str, list[list[object]]] = {}
    for i, blob in enumerate(blobs):
        other = locs[(i + 1) % len(locs)]
        assert other is not None
        row: list[object] = [blob, other.type, other.offset, other.length, other.raw_length]
        entries.setdefault(other.pack, []).append(row)
    packs = [{"id": p, "blobs": b} for p, b in entries.items()]
    first = min(obj.name for obj in repo.storage.list("index/"))
    while True:
        index_id, data = encode_index(packs, repo.metadata)  # type: ignore[arg-type]
        if index_name(index_id) < first:
            break
    repo.storage.put(index_name(index_id), data)
    assert site.restored("app", "config.txt") == GENUINE
