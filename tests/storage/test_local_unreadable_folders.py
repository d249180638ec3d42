"""A folder of a local repository that the user cannot read is an error when its namespace is
listed, not an empty folder: a prune run by a user who cannot read `snapshots/` would
otherwise find every pack unused. Listing everything (what `init` does to take back what it
wrote) skips a folder lifeboat did not make, such as a filesystem root's `lost+found`.
Run as `nobody` from root: root itself reads every folder."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a listing as nobody")

# each line once from list and once from list_names (names only): the two agree
LIST_AS_NOBODY = """
import sys
from lifeboat.errors import StorageError
from lifeboat.storage import open_storage
from lifeboat.storage.base import list_names
storage = open_storage(sys.argv[1])
for names in (lambda p: [o.name for o in storage.list(p)], lambda p: list(list_names(storage, p))):
    try:
        print(sorted(names(sys.argv[2])))
    except StorageError as exc:
        print("refused:", exc)
"""


@pytest.fixture
def repository() -> Iterator[Path]:
    """A repository `nobody` may reach, with `snapshots/` and `lost+found` only root reads."""
    with tempfile.TemporaryDirectory() as top:
        repo = Path(top) / "repo"
        (repo / "snapshots").mkdir(parents=True)
        (repo / "lost+found").mkdir()
        (repo / "config").write_bytes(b"{}")
        (repo / "snapshots" / "a1").write_bytes(b"header")
        os.chmod(top, 0o755)
        os.chmod(repo, 0o755)
        os.chmod(repo / "config", 0o644)
        os.chmod(repo / "snapshots", 0o700)
        os.chmod(repo / "lost+found", 0o700)
        yield repo


def listed_as_nobody(repo: Path, prefix: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", LIST_AS_NOBODY, f"file://{repo}", prefix],
        user="nobody",
        group=pwd.getpwnam("nobody").pw_gid,  # not root's group: it may not reach the checkout
        extra_groups=[],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
        cwd="/",
    )
    return proc.stdout.strip()


def test_a_namespace_that_cannot_be_read_is_refused_not_listed_empty(repository: Path) -> None:
    refused = "refused: permission denied listing snapshots"
    assert listed_as_nobody(repository, "snapshots/").splitlines() == [refused, refused]


def test_listing_everything_skips_a_folder_it_cannot_read(repository: Path) -> None:
    assert listed_as_nobody(repository, "").splitlines() == ["['config']", "['config']"]
