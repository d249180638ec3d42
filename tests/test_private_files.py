"""lifeboat's own files in the state dir (private.py), where the host restricts root."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
