"""A local repository says an object is stored only once a crash cannot take it back: the
file is fsynced, and so is every directory entry on its path that this put created."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lifeboat.storage.local import LocalStorage


def test_a_put_into_new_directories_fsyncs_each_new_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.put("config", b"{}")  # the root exists from here on
    synced: list[str] = []
    fsync = os.fsync

    def recorded(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded)
    storage.put("refs/wal/db/000000010000000000000001", b"segment")
    root = str(tmp_path / "repo")
    # the file, the directory it landed in, and the parent of each directory made for it:
    # after a power loss, the new refs/wal/db/ must not vanish with the segment in it
    for directory in (root, f"{root}/refs", f"{root}/refs/wal", f"{root}/refs/wal/db"):
        assert directory in synced, (directory, synced)
    assert storage.get("refs/wal/db/000000010000000000000001") == b"segment"
