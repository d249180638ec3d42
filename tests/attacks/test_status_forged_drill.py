"""Forged drill results against `status` and `drill list`: an insider with the host (the state
dir, the evidence directory beside the policy, the backup key file and the storage
credentials; not the recovery key) wants an asset whose last drill failed to look tested.

Every attempt leaves the asset's last drill the genuine failed one, and names the bundle
refused as a breach (status exits 1):

* drill.json of the failed bundle edited to "pass", the signature left as it was;
* a newer "pass" bundle signed with the insider's own key;
* the same, with a drill-key record for that key planted in the repository, "root-signed"
  by a root the insider made up;
* a bare drill.json with no signature at all;
* an older genuine "pass" bundle copied under a newer name: its signed start time still
  says it is older.

The genuine drills run through the `lifeboat` executable with the recovery key, as an
operator would; the insider acts on files and through lifeboat's library with the backup key.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifeboat.crypto.pinning import fingerprint
from tests.harness import LifeboatCli, PolicyBuilder
from tests.harness.evidence import plant_drill_key, resign


@dataclass
class Site:
    """One files asset backed up, a drill of it that passed and a later one that failed."""

    lb: LifeboatCli
    root: Path
    passed: Path  # the bundles the operator's drills left
    failed: Path
    failed_started: str

    @property
    def evidence(self) -> Path:
        return self.root / "evidence"

    def status(self) -> tuple[int, dict]:
        proc = self.lb.run("status", "--json", check=False)
        assert proc.returncode in (0, 1), proc.stderr
        [asset] = json.loads(proc.stdout)["assets"]
        return proc.returncode, asset


def _drill(lb: LifeboatCli) -> dict:
    proc = lb.run("drill", "run", "outage", "--json", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("forged-drill")
    (root / "keys").mkdir()
    (root / "etc").mkdir()
    (root / "etc" / "app.conf").write_text("port = 1\n")
    (
        PolicyBuilder()
        .repository(f"file://{root}/repo", recovery_key="keys/recovery.key")
        .data_class("gold", rpo="1d", rto="1h", retention={"last": 5})
        .files("conf", [root / "etc"], cls="gold")
        .drill("outage", "full-outage", ["conf"], evidence_dir=root / "evidence")
        .write(root / "lifeboat.toml")
    )
    lb = LifeboatCli(root / "lifeboat.toml", cwd=root)
    lb.run("init")
    lb.run("backup", "conf")
    passed = _drill(lb)
    assert passed["verdict"] == "pass", passed["reasons"]
    # the next drill cannot make its staging directory: it fails, and signs that it did
    staging = root / ".lifeboat" / "drills"
    staging.rename(root / "staging")
    staging.write_text("not a directory")
    failed = _drill(lb)
    staging.unlink()
    (root / "staging").rename(staging)
    assert failed["verdict"] == "fail"
    return Site(lb, root, Path(passed["bundle"]), Path(failed["bundle"]), failed["started"])


@pytest.fixture
def site(pristine: Site) -> Iterator[Site]:
    """The site, its evidence directory put back as the drills left it after each attack."""
    kept = pristine.root / "evidence-as-left"
    shutil.copytree(pristine.evidence, kept)
    yield pristine
    shutil.rmtree(pristine.evidence)
    kept.rename(pristine.evidence)


def _refused(site: Site, refused: Path, problem: str) -> dict:
    """Status and `drill list` name the bundle refused and exit 1; the asset's status."""
    code, asset = site.status()
    assert code == 1
    assert f"drill evidence {refused} refused: {problem}" in asset["breaches"], asset["breaches"]
    assert asset["last_drill_bundle"] != str(refused)
    listed = site.lb.run("drill", "list", "--json", check=False)
    assert listed.returncode == 1
    [row] = json.loads(listed.stdout)
    assert {"bundle": str(refused), "problem": problem} in row["refused_bundles"]
    assert row["bundle"] != str(refused)
    return asset


def _still_the_failed_drill(site: Site, refused: Path, problem: str) -> None:
    asset = _refused(site, refused, problem)
    assert (asset["last_drill"], asset["last_drill_verdict"]) == (site.failed_started, "fail")
    assert f"last drill outage failed ({site.failed_started[:19]})" in asset["breaches"]


def test_genuine_drills_are_what_status_shows(pristine: Site) -> None:
    code, asset = pristine.status()
    assert (code, asset["last_drill_verdict"]) == (1, "fail")
    assert asset["last_drill_bundle"] == str(pristine.failed)
    assert not [b for b in asset["breaches"] if b.startswith("drill evidence")]


def _unpublished(key: Ed25519PrivateKey) -> str:
    return f"signed by key {fingerprint(key.public_key())}, which no root-signed drill-key record publishes"


def _newer_pass(site: Site) -> Path:
    """The passed drill's bundle, copied and dated after the failed one: all it takes to
    make the asset look tested, were the signature not checked."""
    forged = site.evidence / "2099-01-01-outage"
    shutil.copytree(site.passed, forged)
    drill = json.loads((forged / "drill.json").read_text())
    drill["started"] = "2099-01-01T00:00:00+00:00"
    (forged / "drill.json").write_text(json.dumps(drill, indent=2, sort_keys=True) + "\n")
    return forged


def test_an_edited_verdict_is_refused(site: Site) -> None:
    drill_json = site.failed / "drill.json"
    drill = json.loads(drill_json.read_text())
    drill_json.write_text(json.dumps(drill | {"verdict": "pass", "reasons": [], "stopped": None}))
    asset = _refused(site, site.failed, "drill.json was modified (SHA-256 mismatch)")
    # the drill before it is the newest that holds: its pass is genuine, the breach stays
    assert (asset["last_drill_verdict"], asset["last_drill_bundle"]) == ("pass", str(site.passed))


def test_a_pass_signed_with_the_insiders_key_is_refused(site: Site) -> None:
    forged = _newer_pass(site)
    theirs = Ed25519PrivateKey.generate()
    resign(forged, theirs)
    _still_the_failed_drill(site, forged, _unpublished(theirs))


def test_a_pass_signed_with_a_planted_drill_key_is_refused(site: Site) -> None:
    _, planted = plant_drill_key(site.root / "lifeboat.toml")
    forged = _newer_pass(site)
    resign(forged, planted)
    _still_the_failed_drill(site, forged, _unpublished(planted))


def test_an_unsigned_drill_json_is_refused(site: Site) -> None:
    bare = site.evidence / "2099-01-02-outage"
    bare.mkdir()
    (bare / "drill.json").write_text(json.dumps({"drill": "outage", "started": "2099", "verdict": "pass"}))
    _still_the_failed_drill(site, bare, "SHA256SUMS is missing")


def test_an_older_pass_replayed_under_a_newer_name_stays_older(site: Site) -> None:
    replayed = site.evidence / "2099-01-03-outage"
    shutil.copytree(site.passed, replayed)
    code, asset = site.status()
    # genuine, so not refused: but its signed start time is the older drill's
    assert (code, asset["last_drill_verdict"], asset["last_drill_bundle"]) == (1, "fail", str(site.failed))
    assert not [b for b in asset["breaches"] if b.startswith("drill evidence")]


def test_a_bundle_being_written_is_not_read(site: Site) -> None:
    """A drill writes its bundle under a hidden name and renames it when signed: status run
    meanwhile neither refuses the half-written one nor counts it."""
    partial = site.evidence / ".2099-01-04-outage.partial-0000"
    shutil.copytree(site.passed, partial)
    (partial / "SHA256SUMS.sig").unlink()
    code, asset = site.status()
    assert (code, asset["last_drill_bundle"]) == (1, str(site.failed))
    assert not [b for b in asset["breaches"] if b.startswith("drill evidence")]
