"""The streamed parent cache carries one MAC per block of lines (repo/parents.py): a line
rewritten without the key file costs its block (those files are read again and counted),
never the rest of the cache, and a cache of the earlier form (a MAC on every line) is still
read, so an upgrade reads no file again."""

from __future__ import annotations

import os
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from lifeboat.assets.files.tree import backup_paths, restore_snapshot
from lifeboat.repo import Repository
from lifeboat.repo import parents as parents_module
from lifeboat.repo.model import PARENT_CACHE_REJECTED, SnapshotInfo
from lifeboat.repo.parents import (
    BLOCK_LINES,
    BLOCK_MARK,
    LINE_MAC_MAGIC,
    PARENTS_MAGIC,
    STREAM_FORM,
    ParentFile,
)
from tests.harness.parent_caches import verified_lines
from tests.harness.settle import settle
from tests.harness.trees import local_repository

FILES = 2 * BLOCK_LINES + 276  # two full blocks and a part one


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return local_repository(tmp_path)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for n in range(FILES):
        d = root / f"d{n // 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{n:04d}").write_bytes(f"file {n}\n".encode() * (n % 7 + 1))
    settle(root)  # so each backup may take them from the last one's cache
    return root


def cache_of(repo: Repository) -> ParentFile:
    cache = repo.parent_cache("tree")
    assert cache is not None
    return cache


def raw_lines(cache: ParentFile) -> tuple[bytes, list[bytes]]:
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(cache.path.read_bytes())
    magic, *lines = raw.split(b"\n")
    return magic, [line for line in lines if line]


def write_raw(cache: ParentFile, magic: bytes, lines: list[bytes]) -> None:
    cache.path.write_bytes(
        zstandard.ZstdCompressor().compress(magic + b"\n" + b"".join(x + b"\n" for x in lines))
    )


def backed_up_after(
    repo: Repository, src: Path, rewrite: Callable[[list[bytes]], list[bytes]]
) -> SnapshotInfo:
    """The next backup after the cache's lines (MAC lines included) were rewritten by
    somebody without the key file."""
    cache = cache_of(repo)
    magic, lines = raw_lines(cache)
    write_raw(cache, magic, rewrite(lines))
    return backup_paths(repo, "tree", [src])


def swapped_entries(lines: list[bytes], a: int, b: int) -> list[bytes]:
    """Lines ``a`` and ``b`` with their entries swapped, their paths and identities kept."""
    pa, ia, ea = lines[a].split(b"\t", 2)
    pb, ib, eb = lines[b].split(b"\t", 2)
    out = list(lines)
    out[a], out[b] = pa + b"\t" + ia + b"\t" + eb, pb + b"\t" + ib + b"\t" + ea
    return out


def moved_marks(lines: list[bytes], first: int, second: int) -> list[bytes]:
    out = list(lines)
    out[first], out[second] = out[second], out[first]
    return out


def restored(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_cache_is_written_in_blocks_each_with_one_mac(repo: Repository, src: Path) -> None:
    backup_paths(repo, "tree", [src])
    magic, lines = raw_lines(cache_of(repo))
    marks = [i for i, line in enumerate(lines) if line.startswith(BLOCK_MARK)]
    assert magic == PARENTS_MAGIC
    assert marks == [BLOCK_LINES, 2 * BLOCK_LINES + 1, FILES + 2]  # after each block, the last one too
    assert len(verified_lines(cache_of(repo))) == FILES


def test_a_line_rewritten_without_the_key_costs_its_block_only(
    repo: Repository, src: Path, tmp_path: Path
) -> None:
    backup_paths(repo, "tree", [src])
    # the insider swaps two entries of the second block (identities kept): the MAC line stays
    a = BLOCK_LINES + 1 + 10
    again = backed_up_after(repo, src, lambda lines: swapped_entries(lines, a, a + 1))
    assert again.labels[PARENT_CACHE_REJECTED] == str(BLOCK_LINES)
    assert again.stats.reused_files == FILES - BLOCK_LINES
    restore_snapshot(repo, again, tmp_path / "out")
    assert restored(tmp_path / "out" / "src") == restored(src)
    # the cache the second backup wrote holds every file again, under good MACs
    third = backup_paths(repo, "tree", [src])
    assert third.stats.reused_files == FILES and PARENT_CACHE_REJECTED not in third.labels


def test_a_mac_line_moved_to_another_block_opens_neither(repo: Repository, src: Path) -> None:
    backup_paths(repo, "tree", [src])
    again = backed_up_after(repo, src, lambda lines: moved_marks(lines, BLOCK_LINES, 2 * BLOCK_LINES + 1))
    assert again.labels[PARENT_CACHE_REJECTED] == str(2 * BLOCK_LINES)
    assert again.stats.reused_files == FILES - 2 * BLOCK_LINES


def test_lines_after_the_last_mac_are_not_used(repo: Repository, src: Path) -> None:
    """A cache cut after a block's lines but before its MAC line: the unsealed lines count
    as failed and those files are read again."""
    backup_paths(repo, "tree", [src])
    again = backed_up_after(repo, src, lambda lines: lines[:-1])
    assert again.labels[PARENT_CACHE_REJECTED] == str(FILES - 2 * BLOCK_LINES)
    assert again.stats.reused_files == 2 * BLOCK_LINES


def test_a_block_of_more_lines_than_any_writer_makes_is_not_held(repo: Repository, src: Path) -> None:
    """Two blocks run together (the first MAC line deleted): the reader stops holding lines
    past BLOCK_LINES, so a cache of millions of lines without a MAC line costs no memory;
    nothing after it is used."""
    backup_paths(repo, "tree", [src])
    again = backed_up_after(repo, src, lambda lines: lines[:BLOCK_LINES] + lines[BLOCK_LINES + 1 :])
    assert again.labels[PARENT_CACHE_REJECTED] == str(BLOCK_LINES + 1)
    assert again.stats.reused_files == 0


def test_blocks_end_early_for_entries_of_many_chunks_and_are_all_read(
    repo: Repository, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of many chunks has a long entry: a writer ends its block past BLOCK_BYTES, and
    a block of any byte size is read (only its number of lines is bounded)."""
    monkeypatch.setattr(parents_module, "BLOCK_BYTES", 4096)
    backup_paths(repo, "tree", [src])
    marks = [line for line in raw_lines(cache_of(repo))[1] if line.startswith(BLOCK_MARK)]
    assert len(marks) > FILES // 100

    again = backup_paths(repo, "tree", [src])
    assert again.stats.reused_files == FILES and PARENT_CACHE_REJECTED not in again.labels


def test_blank_lines_between_blocks_are_skipped_and_inside_one_refuse_it(repo: Repository, src: Path) -> None:
    backup_paths(repo, "tree", [src])
    end = BLOCK_LINES + 1  # after the first block's MAC line
    again = backed_up_after(repo, src, lambda lines: [b"", *lines[:end], b"", *lines[end:], b"", b""])
    assert again.stats.reused_files == FILES and PARENT_CACHE_REJECTED not in again.labels

    at = 2 * BLOCK_LINES + 2 + 3  # into the last block, of FILES - 2 * BLOCK_LINES lines
    third = backed_up_after(repo, src, lambda lines: [*lines[:at], b"", *lines[at:]])
    assert third.labels[PARENT_CACHE_REJECTED] == str(FILES - 2 * BLOCK_LINES + 1)
    assert third.stats.reused_files == 2 * BLOCK_LINES


def test_a_cache_with_a_mac_on_every_line_is_still_read(repo: Repository, src: Path, tmp_path: Path) -> None:
    """What the versions before blocks wrote: an upgrade takes every unchanged file from it,
    refuses its forged lines one by one, and writes the block form."""
    backup_paths(repo, "tree", [src])
    cache = cache_of(repo)
    fields = verified_lines(cache)
    earlier = [cache.line(line, STREAM_FORM) for line in fields]
    forged = fields[5].split(b"\t", 2)
    earlier[5] = earlier[5][: parents_module.MAC_HEX] + b"\t" + forged[0] + b"\t" + forged[1] + b"\t" + b"{}"
    write_raw(cache, LINE_MAC_MAGIC, earlier)

    again = backup_paths(repo, "tree", [src])
    assert again.stats.reused_files == FILES - 1 and again.labels[PARENT_CACHE_REJECTED] == "1"
    assert raw_lines(cache)[0] == PARENTS_MAGIC
    assert len(verified_lines(cache)) == FILES
    restore_snapshot(repo, again, tmp_path / "out")
    assert restored(tmp_path / "out" / "src") == restored(src)
    # the lines carried over from the older form went into the new one without their MACs
    third = backup_paths(repo, "tree", [src])
    assert third.stats.reused_files == FILES and PARENT_CACHE_REJECTED not in third.labels


def test_the_whole_form_reader_takes_both_stream_forms(repo: Repository, src: Path) -> None:
    """A kind that holds the cache whole (objects from a bucket) reads a streamed cache by
    identity: from blocks, and from lines MAC'd one by one."""
    backup_paths(repo, "tree", [src])
    cache = cache_of(repo)
    fields = verified_lines(cache)
    whole = parents_module.ParentCache(cache)
    assert len(whole.entries) == FILES and whole.rejected == 0
    write_raw(cache, LINE_MAC_MAGIC, [cache.line(line, STREAM_FORM) for line in fields])
    assert parents_module.ParentCache(cache).entries == whole.entries
    _, lines = raw_lines(cache)
    write_raw(
        cache, PARENTS_MAGIC, [line.split(b"\t", 1)[1] for line in lines[:BLOCK_LINES]] + [b"#" + b"0" * 32]
    )
    refused = parents_module.ParentCache(cache)
    assert refused.entries == {} and refused.rejected == BLOCK_LINES


def test_a_full_disk_while_the_cache_is_written_keeps_the_old_one_and_leaves_nothing_open(
    repo: Repository, src: Path
) -> None:
    """The new cache is written beside the old one (``.new``) and put in place only once
    whole: a disk that fills on the way (here /dev/full) costs the new cache, not the old
    one, and no file is left open (closed as it fails, not when the collector finds it)."""
    backup_paths(repo, "tree", [src])
    cache = cache_of(repo)
    kept = cache.path.read_bytes()
    pending = cache.path.with_name(cache.path.name + ".new")
    pending.symlink_to("/dev/full")
    descriptors = len(os.listdir("/proc/self/fd"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        again = backup_paths(repo, "tree", [src])
    assert len(os.listdir("/proc/self/fd")) == descriptors
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert again.stats.reused_files == FILES and cache.path.read_bytes() == kept
    assert not pending.exists() and not pending.is_symlink()
    assert backup_paths(repo, "tree", [src]).stats.reused_files == FILES


def test_a_cache_written_under_another_assets_key_is_refused(repo: Repository, src: Path) -> None:
    """Each asset's cache is MAC'd under a key of its own: the insider copying asset tree's
    (valid) cache in place of asset copy's gets every block refused, not used."""
    backup_paths(repo, "tree", [src])
    other = repo.parent_cache("copy")
    assert other is not None
    other.path.write_bytes(cache_of(repo).path.read_bytes())

    first_of_copy = backup_paths(repo, "copy", [src])
    assert first_of_copy.stats.reused_files == 0
    assert first_of_copy.labels[PARENT_CACHE_REJECTED] == str(FILES)


def test_a_line_longer_than_any_block_bound_is_written_and_read(tmp_path: Path) -> None:
    """A file of a great many chunks has an entry of megabytes: its block (one line) is
    longer than BLOCK_BYTES, and nothing bounds a block's bytes on reading."""
    (tmp_path / "parents").mkdir()
    cache = ParentFile(tmp_path / "parents" / "big.json.zst", b"k" * 32)
    line = b'"big"\t"big|1"\t{"chunks":["' + b"a" * (parents_module.BLOCK_BYTES * 17) + b'"]}'
    out = parents_module.ParentStreamWriter(cache)
    out.add_line(line)
    out.add_line(b'"small"\t"small|1"\t{}')
    out.commit()
    assert verified_lines(cache) == [line, b'"small"\t"small|1"\t{}']


@pytest.mark.parametrize(
    "magic",
    [b"lifeboat-parents-stream 3", b"lifeboat-parents-stream 9", b"{}", b"the first form: one document"],
)
def test_a_cache_of_a_form_this_version_does_not_read_is_left_after_its_first_line(
    tmp_path: Path, magic: bytes
) -> None:
    """An earlier (or later) form is not read at all, nor held whole to find that out: a
    million files' cache is ~500 MB uncompressed. Nothing is refused either: it is not a
    forgery, only a cache this version cannot use."""
    (tmp_path / "parents").mkdir()
    cache = ParentFile(tmp_path / "parents" / "old.json.zst", b"k" * 32)
    lines = [b'"f%06d"\t"f%06d|1"\t{"pad":"%s"}' % (n, n, b"x" * 200) for n in range(100_000)]
    if magic.startswith(b"the first form"):  # one JSON document, no newline at all
        cache.path.write_bytes(zstandard.ZstdCompressor().compress(b'{"x":"' + b"".join(lines) + b'"}'))
    else:
        write_raw(cache, magic, lines)  # ~23 MB of lines
    tracemalloc.start()
    try:
        stream = parents_module.ParentStream(cache)
        whole = parents_module.ParentCache(cache)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stream.lookup("f000001", "f000001|1") is None and whole.entries == {}
    assert stream.rejected == whole.rejected == 0
    assert peak < 4 << 20
    stream.close()
