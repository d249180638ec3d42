"""Source files made to look written a while ago, so a later backup may reuse them.

A regular file changed moments before a backup's walk could have been read while a write
was still under way, so that backup reads it but does not trust it as unchanged: the next
backup reads it again instead of taking it from the parent cache (git's "racy clean" rule;
see ``_Feeder.settled_before`` in src/lifeboat/assets/files/tree.py). A test that writes
its sources and backs them up at once, then expects the next backup to reuse them, settles
them first: every regular file's mtime is moved back, as if written that long before.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def settle(*roots: Path, seconds: float = 86400.0) -> None:
    """Move back by ``seconds`` the mtime of every regular file under ``roots`` (each a
    directory or a file), keeping its atime; symlinks are neither followed nor changed."""
    back = int(seconds * 1_000_000_000)
    for root in roots:
        paths = [root]
        if stat.S_ISDIR(root.lstat().st_mode):
            paths += [Path(d, name) for d, _, names in os.walk(root) for name in names]
        for path in paths:
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - back), follow_symlinks=False)
