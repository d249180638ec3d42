"""Small source trees for tests that need a backup with a few index entries."""

from __future__ import annotations

from pathlib import Path


def thirty_files(tmp_path: Path) -> Path:
    """``tmp_path/src`` with 30 small files of distinct content (one pack, one index file)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i}").write_bytes(f"file {i}\n".encode() * (i + 1))
    return src
