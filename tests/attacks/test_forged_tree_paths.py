"""A compromised backup host (its writer key file and the repository's storage) commits a
snapshot of its own asset whose tree names a path out of the restore target, with totals
small enough that the restore skips its up-front pass over the tree. The defender restores
it with the real `lifeboat` executable into an empty target: one-line refusal, exit 2,
nothing written outside the target and nothing of the snapshot left inside."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeboat.repo.backup import BackupSession
from tests.attacks.test_forged_history import Site, attacker, make_site
from tests.harness import Clock


@pytest.fixture
def site(tmp_path: Path, clock: Clock) -> Site:
    return make_site(tmp_path, clock)


def test_a_tree_escaping_the_target_restores_nothing_anywhere(site: Site) -> None:
    repo = attacker(site, site.issue_writer("web-1", "web"))
    with BackupSession(repo, asset="web", kind="files", use_parent_cache=False) as session:
        session.add_bytes("web/config.txt", b"written before the escape\n")
        session.add_bytes("web/z/../../../escaped.txt", b"outside the target\n")  # sorts after
        forged = session.commit()
    assert forged.stats.files == 2  # tiny totals: the space check takes them, no pass first

    restores = site.root / "restores"
    target = restores / "web-target"
    proc = site.run("restore", "web", "--target", str(target), *site.recovery, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("lifeboat: error: refusing unsafe path") and "escaped.txt" in first
    assert "Traceback" not in proc.stderr
    assert not list(site.root.rglob("escaped.txt"))
    assert not target.exists() or not any(target.iterdir())  # config.txt was taken back
