"""A compromised backup host (its writer key file + storage credentials) of asset ``web``
breaks the restores of another writer's asset ``app``: pack trailers list every blob's id,
offset and length without a key, and an index file names no asset, so any authorised writer
may sign one. It signs an index pointing each of app's blob ids at another blob's location,
its name ground to sort first, so its locations are the ones tried first. Readers fall back
to a blob's other locations when one fails authentication, ``check --read-data`` names the
misdirection without blaming the healthy packs, and prune's repack never trusts a listing
the pack's own trailer does not confirm."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeboat.repo.format import index_name, parse_pack_trailer
from lifeboat.repo.index import encode_index
from tests.attacks.test_forged_history import GENUINE, Site, attacker, make_site
from tests.harness import Clock


@pytest.fixture
def site(tmp_path: Path, clock: Clock) -> Site:
    return make_site(tmp_path, clock)


def test_another_writers_forged_index_does_not_break_a_genuine_restore(site: Site) -> None:
    site.backup("app")
    site.backup("web")
    repo = attacker(site, site.issue_writer("web-1", "web"))
    table = []  # (pack, blob id, type, offset, length, raw length) of every stored blob
    for obj in repo.storage.list("data/"):
        pack = obj.name.rsplit("/", 1)[-1]
        table += [(pack, *blob) for blob in parse_pack_trailer(repo.storage.get(obj.name))]
    entries: dict[str, list[list[object]]] = {}
    for i, (_, blob_id, *_rest) in enumerate(table):
        pack, _, btype, offset, length, raw = table[(i + 1) % len(table)]
        entries.setdefault(pack, []).append([blob_id, btype, offset, length, raw])
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
    assert "corrupt-chunk" not in kinds, problems  # no healthy pack is blamed
    # A prune that repacks every small pack keeps what the genuine snapshot needs.
    site.run("prune", "--repack-small", "--max-unused", "0%", *site.recovery)
    assert site.restored("app", "config.txt") == GENUINE
    assert site.restored("web", "config.txt") == GENUINE
