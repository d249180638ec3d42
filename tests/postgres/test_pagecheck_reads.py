"""The page checker's verdicts do not depend on how a relation file's bytes arrive: reads
smaller than a page, reads that gather into one check of many pages, one read of the whole
file. Pure logic on synthetic pages (the checksum itself is checked against PostgreSQL's
in test_page_checksums.py)."""

from __future__ import annotations

import os
import struct

import pytest

from lifeboat.assets.postgres.pagecheck import (
    CHECK_BYTES,
    PAGE_SIZE,
    RELSEG_PAGES,
    FileChecker,
    page_checksum,
    page_checksums,
    relation_segment,
)

START_LSN = 5 << 32
SEGMENT = 1  # block numbers continue across segments: checksums depend on them


def page(block: int, kind: str) -> bytes:
    """A page of ``kind``: good, bad (checksum off by some bits), zero (new, clean), dirty
    (new, not all zeroes), recent (written after the backup started; checksum off too)."""
    if kind == "zero":
        return bytes(PAGE_SIZE)
    body = bytearray(os.urandom(PAGE_SIZE))
    lsn = (9 << 32) if kind == "recent" else (1 << 32) + block
    upper = 0 if kind == "dirty" else 4000
    struct.pack_into("<IIHHHH", body, 0, lsn >> 32, lsn & 0xFFFFFFFF, 0, 0, 100, upper)
    checksum = page_checksum(bytes(body), block)
    struct.pack_into("<H", body, 8, checksum ^ (0x55 if kind in ("bad", "recent") else 0))
    return bytes(body)


KINDS = ["good"] * 300
for at, kind in {3: "bad", 140: "zero", 141: "dirty", 200: "recent", 250: "bad", 299: "bad"}.items():
    KINDS[at] = kind
FILE = b"".join(page(SEGMENT * RELSEG_PAGES + i, kind) for i, kind in enumerate(KINDS)) + b"extending"


@pytest.mark.parametrize("read", [3000, PAGE_SIZE, CHECK_BYTES // 3, CHECK_BYTES + 5, len(FILE)])
def test_verdicts_name_the_same_blocks_whatever_the_read_size(read: int) -> None:
    checker = FileChecker("base/5/16384.1", SEGMENT, START_LSN)
    for start in range(0, len(FILE), read):
        checker.feed(FILE[start : start + read])
    bad = checker.finish()

    first = SEGMENT * RELSEG_PAGES
    assert [(v.block - first, v.reason.split(" ")[0]) for v in bad] == [
        (3, "checksum"),
        (141, "new"),
        (250, "checksum"),
        (299, "checksum"),
    ]
    assert checker.checked == 300 - 3  # the new pages and the recent one are not checksummed
    assert bad[0].lsn == (1 << 32) + first + 3


def test_the_checksum_is_the_one_postgresql_computes_without_a_server() -> None:
    """Values of the pure-Python checksum this one replaced, which test_page_checksums.py
    checked against PostgreSQL's own: block numbers up to the last one a relation has."""
    pages = [bytes(range(256)) * 32] * 3
    assert page_checksums(pages, [0, 131077, 2**32 - 1]) == [59142, 59149, 6395]
    with pytest.raises(ValueError):
        page_checksums(pages, [0, 1])


def headed(lsn: int, block: int, stored_off: int = 0) -> bytes:
    """A random page with LSN ``lsn`` whose checksum is right for ``block`` (or off)."""
    body = bytearray(os.urandom(PAGE_SIZE))
    struct.pack_into("<IIHHHH", body, 0, lsn >> 32, lsn & 0xFFFFFFFF, 0, 0, 100, 4000)
    struct.pack_into("<H", body, 8, page_checksum(bytes(body), block) ^ stored_off)
    return bytes(body)


@pytest.mark.parametrize("start", [5 << 32, (0xFFFFFFF0 << 32) + 7])
def test_a_page_written_at_the_start_lsn_is_skipped_and_one_before_it_is_checked(start: int) -> None:
    """Every page here has a wrong checksum: only those older than the backup's start are
    judged (high LSNs too, past 2**63)."""
    lsns = [start, start - 1, start + 1, start - (1 << 32)]
    checker = FileChecker("base/5/16384", 0, start)
    checker.feed(b"".join(headed(lsn, block, stored_off=1) for block, lsn in enumerate(lsns)))
    bad = checker.finish()

    assert [(v.block, v.lsn) for v in bad] == [(1, start - 1), (3, start - (1 << 32))]
    assert checker.checked == 2


def test_segment_numbers_no_relation_reaches_are_not_relation_files() -> None:
    assert relation_segment("base/1/2.32767") == 32767  # the last of a 32 TB relation
    assert relation_segment("base/1/2.32768") is None
    assert relation_segment("base/1/2.99999999999999999") is None
