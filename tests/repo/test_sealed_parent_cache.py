"""A key material parent cache is sealed whole, block by block (repo/parents.py): what it
holds comes back exactly, and a block moved, changed or dropped does not open. Pure logic
on real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lifeboat.repo import parents
from lifeboat.repo.parents import (
    EARLIER_SEALED_MAGIC,
    FINAL_BIT,
    SEALED_MAGIC,
    ParentFile,
    ParentStream,
    ParentStreamWriter,
)


def sealed_file(tmp_path: Path, seal_key: bytes = b"s" * 32) -> ParentFile:
    return ParentFile(tmp_path / "cache.json.zst", b"m" * 32, seal_key)


def write_cache(file: ParentFile, count: int) -> list[tuple[str, str, bytes]]:
    """``count`` files in walk order, each entry random (so the compressed cache spans blocks)."""
    rows = [
        (f"d/f{n:05}", f"id-{n}", b'{"chunks":["' + os.urandom(40).hex().encode() + b'"]}')
        for n in range(count)
    ]
    writer = ParentStreamWriter(file)
    for path, identity, entry in rows:
        writer.add(path, identity, entry)
    writer.commit()
    return rows


def read_cache(file: ParentFile, rows: list[tuple[str, str, bytes]]) -> tuple[int, int]:
    """(entries found, entries rejected) looking every row up in walk order."""
    stream = ParentStream(file)
    found = sum(stream.lookup(path, identity) == entry for path, identity, entry in rows)
    stream.close()
    return found, stream.rejected


def blocks(raw: bytes) -> list[bytes]:
    """A sealed cache's blocks, each with its length in front."""
    at, out = len(SEALED_MAGIC), []
    while at < len(raw):
        size = int.from_bytes(raw[at : at + 4], "big") & ~FINAL_BIT
        out.append(raw[at : at + 4 + size])
        at += 4 + size
    return out


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parents, "SEAL_BLOCK", 4096)


def test_a_sealed_cache_of_many_blocks_gives_back_every_entry(tmp_path: Path) -> None:
    file = sealed_file(tmp_path)
    rows = write_cache(file, 2000)
    raw = file.path.read_bytes()

    assert raw.startswith(SEALED_MAGIC) and len(blocks(raw)) > 10
    assert b"d/f00001" not in raw and rows[1][2] not in raw  # neither paths nor entries in clear
    assert read_cache(file, rows) == (2000, 0)


@pytest.mark.parametrize("damage", ["swap two blocks", "drop a block", "change a byte"])
def test_a_block_moved_dropped_or_changed_stops_the_cache_there_and_counts_as_rejected(
    tmp_path: Path, damage: str
) -> None:
    file = sealed_file(tmp_path)
    rows = write_cache(file, 5000)
    parts = blocks(file.path.read_bytes())
    at = len(parts) * 3 // 4  # past zstd's first block (128 KiB), which decodes whole or not at all
    if damage == "swap two blocks":
        parts[at], parts[at + 1] = parts[at + 1], parts[at]
    elif damage == "drop a block":
        del parts[at]
    else:
        parts[at] = parts[at][:20] + bytes([parts[at][20] ^ 1]) + parts[at][21:]
    file.path.write_bytes(SEALED_MAGIC + b"".join(parts))

    found, rejected = read_cache(file, rows)

    assert 0 < found < 5000 and rejected == 1  # what came before the damage is still used


def test_another_seal_key_opens_nothing_and_is_reported(tmp_path: Path) -> None:
    rows = write_cache(sealed_file(tmp_path), 100)

    assert read_cache(sealed_file(tmp_path, seal_key=b"x" * 32), rows) == (0, 1)
    (tmp_path / "cache.json.zst").write_bytes(b"anything else")
    assert read_cache(sealed_file(tmp_path), rows) == (0, 1)


def test_a_cache_of_the_earlier_unsealed_form_is_not_read_and_not_reported(tmp_path: Path) -> None:
    """An upgrade finds the earlier form (a zstd stream whose entries were sealed one by
    one): its files are read once more, and no warning says the state dir was modified."""
    rows = write_cache(ParentFile(tmp_path / "cache.json.zst", b"m" * 32), 100)

    assert read_cache(sealed_file(tmp_path), rows) == (0, 0)


@pytest.mark.parametrize("cut", ["after the header", "before the final block", "inside the final block"])
def test_a_cache_cut_anywhere_even_at_a_block_boundary_is_refused_and_reported(
    tmp_path: Path, cut: str
) -> None:
    """A cut at a block boundary leaves every remaining block whole: only the missing final
    block tells it from a shorter cache, so it must not be read as one in silence."""
    file = sealed_file(tmp_path)
    rows = write_cache(file, 5000)
    raw = file.path.read_bytes()
    parts = blocks(raw)
    kept = {
        "after the header": SEALED_MAGIC,
        "before the final block": SEALED_MAGIC + b"".join(parts[:-1]),
        "inside the final block": raw[:-10],
    }[cut]
    file.path.write_bytes(kept)

    found, rejected = read_cache(file, rows)

    assert found < 5000 and rejected == 1


def test_a_sealed_cache_of_the_earlier_form_without_a_final_block_is_read_again_not_reported(
    tmp_path: Path,
) -> None:
    file = sealed_file(tmp_path)
    rows = write_cache(file, 100)
    file.path.write_bytes(EARLIER_SEALED_MAGIC + file.path.read_bytes()[len(SEALED_MAGIC) :])

    assert read_cache(file, rows) == (0, 0)


def test_a_forged_block_length_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    """A length of 2 GiB would have the reader ask for 2 GiB of memory first."""
    file = sealed_file(tmp_path)
    rows = write_cache(file, 100)
    file.path.write_bytes(SEALED_MAGIC + (FINAL_BIT - 1).to_bytes(4, "big") + b"x" * 64)

    assert read_cache(file, rows) == (0, 1)
