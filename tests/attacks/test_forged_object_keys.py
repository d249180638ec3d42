"""A compromised backup host (its writer key file and the repository's storage) commits a
snapshot of its own `dir://` objects asset whose 4,101st key has a path segment longer
than any file name. The defender restores the whole snapshot into an empty directory,
which skips the up-front survey (its recorded totals fit): the restore writes the objects
before that key, meets it, refuses it in one line and removes what it wrote."""

from __future__ import annotations

import io
from pathlib import Path

from lifeboat.assets.objects.keypaths import KEY_PATHS_LABEL, KEY_PATHS_VERSION
from lifeboat.crypto.keys import load_backup_key
from lifeboat.repo import Entry, Repository
from lifeboat.repo.backup import BackupSession
from lifeboat.storage import open_storage
from tests.objects.dir_media import dir_media, files_under

AHEAD = 4100  # more objects than a restore plans at once (restore.PLAN_OBJECTS)


def test_a_key_no_directory_can_hold_is_refused_and_what_came_before_it_taken_back(tmp_path: Path) -> None:
    source = tmp_path / "media"
    media = dir_media(tmp_path, source)
    keyfile = media.policy.parent / "keys" / "backup.key"
    host = Repository.open(open_storage(f"file://{tmp_path / 'repo'}"), backup_key=load_backup_key(keyfile))
    with BackupSession(host, asset="media", kind="objects", use_parent_cache=False) as session:
        session.stream_tree()
        session.put(Entry(path="a", type="dir", mode=0o755, mtime_ns=0))
        for key in [f"a/ok{i:05}.bin" for i in range(AHEAD)] + ["a/" + "x" * 300]:
            meta = {"key": key, "etag": "1-1", "last_modified": "2026-12-04T00:00:00+00:00"}
            session.put(session.read_stream(key, io.BytesIO(b"payload"), mtime_ns=0, meta=meta))
        session.set_labels({"source": f"dir://{source}", KEY_PATHS_LABEL: KEY_PATHS_VERSION})
        session.commit()

    target = tmp_path / "restored"
    proc = media.lb.run(
        "restore", "media", "--target", f"dir://{target}", "--recovery-key", media.recovery, check=False
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("lifeboat: error: 1 keys cannot be files under"), proc.stderr
    assert "longer than 255 bytes" in first and "Traceback" not in proc.stderr
    assert not target.exists() or files_under(target) == {}  # the 4,100 objects were taken back
