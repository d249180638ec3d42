"""A whole snapshot of a `dir://` source restored into an empty directory takes its space
and byte count from the snapshot's recorded totals instead of a pass over the whole tree
(issue #18). What that pass used to refuse before anything was written is now found as
the tree is written: a damaged tree document here, a key no directory can hold in
tests/attacks/test_forged_object_keys.py. Either way the target is left as empty as it
was, with a one-line error."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lifeboat import runtime
from lifeboat.assets.registry import load_policy
from lifeboat.repo import Repository
from tests.harness import LifeboatCli
from tests.harness.packs import damage_trees_of
from tests.objects.dir_media import dir_media, files_under

# more objects than a restore plans at once (restore.PLAN_OBJECTS): the damage is met
# after the first batch was written, not while the first batch is planned
AHEAD = 4100


def _media(tmp_path: Path) -> tuple[LifeboatCli, Path, str]:
    source = tmp_path / "media"
    media = dir_media(tmp_path, source)
    return media.lb, source, media.recovery


def _repo(tmp_path: Path) -> Repository:
    return runtime.open_for_write(load_policy(tmp_path / "lifeboat.toml"))


def _assert_refused_in_one_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode not in (0, 70), proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("lifeboat: error: ") and all(n in lines[0] for n in needles), proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_whole_snapshot_into_an_empty_directory_restores_every_byte(tmp_path: Path) -> None:
    lb, source, recovery = _media(tmp_path)
    for d in range(3):
        (source / f"d{d}").mkdir()
        for f in range(40):
            (source / f"d{d}" / f"f{f}.bin").write_bytes(os.urandom(100 + f))
    lb.run("backup", "media")
    target = tmp_path / "restored"
    out = lb.json("restore", "media", "--target", f"dir://{target}", "--recovery-key", recovery)
    assert out["restored"] == 120 and out["restored_bytes"] == 3 * sum(100 + f for f in range(40))
    assert files_under(target) == files_under(source)


def test_a_tree_document_damaged_midway_leaves_the_empty_directory_empty(tmp_path: Path) -> None:
    """d0 is written before d1's document, reused from the first snapshot's tree pack, turns
    out damaged: d0's files are taken back."""
    lb, source, recovery = _media(tmp_path)
    (source / "d1").mkdir()
    (source / "d1" / "old.bin").write_bytes(b"in the first snapshot")
    lb.run("backup", "media")
    first_packs = set(_repo(tmp_path).index(refresh=True).packs())
    (source / "d0").mkdir()
    for i in range(AHEAD):
        (source / "d0" / f"new{i:05}.bin").write_bytes(b"only in the second %d" % i)
    lb.run("backup", "media")
    damage_trees_of(_repo(tmp_path), first_packs, tmp_path / "repo")

    target = tmp_path / "restore" / "t"
    target.mkdir(parents=True)
    proc = lb.run("restore", "media", "--target", f"dir://{target}", "--recovery-key", recovery, check=False)
    _assert_refused_in_one_line(proc)
    assert list(target.iterdir()) == []  # the operator's empty directory stays, empty
