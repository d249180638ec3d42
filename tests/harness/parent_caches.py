"""Reading and rewriting a streamed parent cache (repo/parents.py) as its writer would:
for tests that plant entries a key holder could have written."""

from __future__ import annotations

import io

import zstandard

from lifeboat.repo.parents import ParentFile, ParentStreamWriter


def verified_lines(cache: ParentFile) -> list[bytes]:
    """The fields of every line of the cache (each block's MAC must hold)."""
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(cache.path.read_bytes())
    magic, _, body = raw.partition(b"\n")
    rejected: list[int] = []
    lines = list(cache.verified_stream(magic, io.BytesIO(body), rejected.append))
    assert not rejected, f"{sum(rejected)} lines of the cache failed their MAC"
    return lines


def rewrite(cache: ParentFile, lines: list[bytes]) -> None:
    """Replace the cache with these lines' fields, MAC'd block by block as a backup writes them."""
    out = ParentStreamWriter(cache)
    for line in lines:
        out.add_line(line)
    out.commit()
