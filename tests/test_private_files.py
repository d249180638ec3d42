"""lifeboat's own files in the state dir (private.py), where the host restricts root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lifeboat.errors import ConfigError
from lifeboat.private import private_opener

WRITE_AS_NOBODY = """
import json, os, sys
from pathlib import Path
from lifeboat.private import write_private
path = Path(sys.argv[1])
write_private(path, b"watermark", owner=(65534, 65534))
names = sorted(p.name for p in path.parent.iterdir())
print(json.dumps([path.read_bytes().decode(), path.stat().st_uid, names]))
"""


def test_a_file_meant_for_another_owner_is_written_where_root_may_not_give_it(tmp_path: Path) -> None:
    """Root without CAP_CHOWN (a hardened systemd unit): the audit watermark meant for
    PostgreSQL's user is still written, as root's, and no temporary file is left."""
    path = tmp_path / "audit.anchored.json"
    cmd = [
        "setpriv",
        "--bounding-set=-chown",
        "--inh-caps=-chown",
        sys.executable,
        "-c",
        WRITE_AS_NOBODY,
        str(path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["watermark", 0, [path.name]]
    given = subprocess.run(
        [sys.executable, "-c", WRITE_AS_NOBODY, str(path)], capture_output=True, text=True, timeout=60
    )
    assert json.loads(given.stdout)[1] == 65534  # with the capability, it is given


def test_a_hard_link_is_opened_in_a_directory_only_we_write_and_refused_where_others_may(
    tmp_path: Path,
) -> None:
    """A second name for a file in lifeboat's own 0700 directory is the operator's (a
    `cp -al` copy of the state dir): used. In a directory another user may write, it is
    the way to have lifeboat write to a file elsewhere: refused, and nothing truncated."""
    own = tmp_path / "own"
    own.mkdir(mode=0o700)
    (own / "runs.jsonl").write_text("kept\n")
    os.link(own / "runs.jsonl", tmp_path / "copy-of-runs.jsonl")
    with open(own / "runs.jsonl", "a", opener=private_opener) as fh:
        fh.write("added\n")
    assert (tmp_path / "copy-of-runs.jsonl").read_text() == "kept\nadded\n"

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o770)
    os.link(own / "runs.jsonl", shared / ".drain.lock")
    with pytest.raises(ConfigError, match="is a hard link to a file with another name"):
        open(shared / ".drain.lock", "w", opener=private_opener)  # noqa: SIM115 (refused)
    assert (own / "runs.jsonl").read_text() == "kept\nadded\n"
