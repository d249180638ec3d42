"""A user whose home root runs lifeboat with (``sudo -E``, a sudoers rule that keeps HOME),
against root: the user owns the cache directory that would hold the list of modules to
read ahead (lifeboat/cli/import_readahead.py), or links a directory in it to one that
root's shells source, or leaves it writable by all. Root writes nothing there and reads no
list from there. Real processes and directories."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from lifeboat.cli import import_readahead
from tests.cli.test_import_readahead import MISSING_POLICY


@pytest.mark.skipif(os.geteuid() != 0, reason="hands a directory to another user: needs root")
def test_another_users_cache_directory_or_a_link_in_it_is_never_read_nor_written(tmp_path: Path) -> None:
    """Root run with a user's home (``sudo -E``): the user owns the cache directory, or
    links its `imports` to a directory that root's shells read. Root writes nothing there,
    and reads no list the user wrote."""
    nobody = pwd.getpwnam("nobody")
    theirs = tmp_path / "theirs"
    (theirs / ".cache").mkdir(parents=True)
    os.chown(theirs / ".cache", nobody.pw_uid, nobody.pw_gid)
    linked = tmp_path / "linked"
    (linked / ".cache" / "lifeboat").mkdir(parents=True, mode=0o700)
    sourced = tmp_path / "sourced-by-root"
    sourced.mkdir()
    (linked / ".cache" / "lifeboat" / "imports").symlink_to(sourced)
    shared = tmp_path / "shared"
    (shared / ".cache" / "lifeboat").mkdir(parents=True)
    (shared / ".cache" / "lifeboat").chmod(0o777)
    slashed = tmp_path / "slashed"
    slashed.mkdir()
    (slashed / "cache").symlink_to(sourced)  # named with a trailing slash below
    nowhere = tmp_path / "etc" / "nologin"  # where a directory root made would stop logins
    nowhere.parent.mkdir()

    runs = [(theirs, {}), (linked, {}), (shared, {}), (slashed, {"XDG_CACHE_HOME": f"{slashed}/cache/"})]
    for home, env in [*runs, (theirs, {"XDG_CACHE_HOME": str(nowhere)})]:
        run = subprocess.run(
            [sys.executable, "-m", "lifeboat", *MISSING_POLICY, "check"],
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"} | {"HOME": str(home), **env},
        )
        assert run.returncode != 0 and "Traceback" not in run.stderr

    assert list((theirs / ".cache").iterdir()) == []
    assert list(sourced.iterdir()) == []
    assert list((shared / ".cache" / "lifeboat").iterdir()) == []
    assert not nowhere.exists()
    assert import_readahead.open_cache_dir(str(theirs / ".cache")) is None
