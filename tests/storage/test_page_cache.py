"""A local repository's packs leave the page cache once durable: a backup on a database
server must not push the server's cached pages out with its own. Small objects (snapshot
headers, refs, index files), which listings read back, stay cached."""

from __future__ import annotations

import ctypes
import mmap
import os
import subprocess
from pathlib import Path

import pytest

from lifeboat.storage.local import DROP_CACHED_FROM, LocalStorage

pytestmark = pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="posix_fadvise is Linux's")


def resident_pages(path: Path) -> int:
    """The file's pages in the page cache, by mincore(2) over a mapping that touches none."""
    size = path.stat().st_size
    libc = ctypes.CDLL(None, use_errno=True)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY) as mapped:
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vector = (ctypes.c_ubyte * pages)()
        address = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(mapped)))
        if libc.mincore(address, ctypes.c_size_t(size), vector) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        resident = sum(page & 1 for page in vector)
        del address  # the mapping closes only once nothing points into it
    return resident


def on_tmpfs(path: Path) -> bool:
    """A tmpfs file's pages are the file itself: the kernel never drops them."""
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True)
    return kind.stdout.strip() == "tmpfs"


def test_a_pack_sized_object_is_dropped_from_the_page_cache_once_written(tmp_path: Path) -> None:
    if on_tmpfs(tmp_path):
        pytest.skip("the temporary directory is a tmpfs, whose pages are never dropped")
    storage = LocalStorage(tmp_path / "repo")
    pack = os.urandom(4 * DROP_CACHED_FROM)

    storage.put("data/ab/pack", pack)

    stored = tmp_path / "repo" / "data" / "ab" / "pack"
    assert resident_pages(stored) == 0
    assert storage.get("data/ab/pack") == pack  # still there: only its cached copy went


def test_a_small_object_stays_in_the_page_cache(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")

    storage.put("snapshots/s1", os.urandom(8192))

    assert resident_pages(tmp_path / "repo" / "snapshots" / "s1") == -(-8192 // mmap.PAGESIZE)
