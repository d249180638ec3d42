"""A keys restore against somebody who can write into its target while it runs: after a key
file is written and before it is read back for its fingerprint, they move its directory
away and put their own key at its path. The restore must judge the bytes at the path, so
the key is reported as not matching and the restore fails, never "every fingerprint
matches". The swap happens at the point between the two (a hook, not a race); the
attacker's hands touch only the target directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.keys.test_keys import keys_env, shares

# The restore as the CLI runs it, with the insider's move made just before the first batch
# is read back (``_Fingerprints.written``): what they do is rename, mkdir and write.
SWAP_THEN_RESTORE = """
import os, runpy, sys
from pathlib import Path
from lifeboat.assets.keys import capture

held = Path(os.environ["SWAP_DIR"])
original = capture._Fingerprints.written

def written(self, *args):
    if (held / "id.key").exists() and not held.with_name("moved").exists():
        held.rename(held.with_name("moved"))
        held.mkdir()
        (held / "id.key").write_bytes(b"ATTACKER KEY")
    return original(self, *args)

capture._Fingerprints.written = written
sys.argv = ["lifeboat", *sys.argv[1:]]
runpy.run_module("lifeboat", run_name="__main__")
"""


def test_a_key_swapped_in_by_moving_its_directory_is_reported_as_not_matching(tmp_path: Path) -> None:
    keys = tmp_path / "platform-keys" / "d"
    keys.mkdir(parents=True)
    (keys / "id.key").write_bytes(b"the real secret key")
    env = keys_env(tmp_path)
    env.run("init", "--shares-out", str(tmp_path / "shares"))
    env.run("backup", "platform-keys")
    target = tmp_path / "restored"
    restore = ["restore", "platform-keys", "--target", str(target), "--json", *shares(env, "alice", "carol")]

    proc = env.shell(
        [sys.executable, "-c", SWAP_THEN_RESTORE, "--config", str(env.policy), *restore],
        check=False,
        env={"SWAP_DIR": str(target / "platform-keys" / "d")},
    )

    restored = target / "platform-keys"
    assert (restored / "moved" / "id.key").read_bytes() == b"the real secret key"  # the swap happened
    assert (restored / "d" / "id.key").read_bytes() == b"ATTACKER KEY"
    out = json.loads(proc.stdout)
    assert proc.returncode == 1 and out["ok"] is False
    (row,) = [k for k in out["keys"] if k["path"] == "platform-keys/d/id.key"]
    assert row["match"] is False
