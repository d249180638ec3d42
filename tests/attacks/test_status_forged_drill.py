"""Forged drill results against `status` and `drill list`: an insider with the host (the state
dir, the evidence directory beside the policy, the backup key file and the storage
credentials; not the recovery key) wants an asset whose last drill failed to look tested.

Every attempt is named as a breach (status and `drill list` exit 1), and the asset's last
drill is the newest genuine one:

* drill.json of the failed bundle edited to "pass", the signature left as it was;
* a newer "pass" bundle signed with the insider's own key;
* the same, with a drill-key record for that key planted in the repository, "root-signed"
  by a root the insider made up;
* a bare drill.json with no signature at all;
* an older genuine "pass" bundle copied under a newer name: its signed start time still
  says it is older;
* a "pass" signed with a drill key the insider kept from before a rotation: dated after it,
  dated between the last genuine drill and it, for the very run that failed, or as a run of
  a drill the policy does not have;
* an older genuine "pass" put where the audit log names the failed run's bundle;
* the failed bundle deleted, hidden under a dot-name, or edited to claim an old start: the
  audit log names it as the drill's newest, so its absence is named (the older genuine pass
  shows as the last drill, beside the breach);
* files that are not files (a FIFO, a link to /dev/zero, a signature that is not text):
  refused, never a crash or a hang of status or of the daemon's refresh.

The insider can still remove the audit log's newest drill entries with the bundle: `audit
verify` names that (tests/attacks/test_audit_tampering.py).

The genuine drills run through the `lifeboat` executable with the recovery key, as an
operator would; the insider acts on files and through lifeboat's library with the backup key.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifeboat import runtime
from lifeboat.assets.registry import load_policy
from lifeboat.crypto.keys import load_recovery_key
from lifeboat.crypto.pinning import fingerprint, open_signing_key
from lifeboat.crypto.writers import RootKey
from lifeboat.drills.signing_key import lookup
from lifeboat.repo.records import RecordsView
from tests.harness import LifeboatCli
from tests.harness.evidence import drilled_site, plant_drill_key, resign


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
    lb = drilled_site(root)
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
    named = f"drill evidence {refused} refused: {problem}"
    assert [b for b in asset["breaches"] if b.startswith(named)], asset["breaches"]
    assert asset["last_drill_bundle"] != str(refused)
    listed = site.lb.run("drill", "list", "--json", check=False)
    assert listed.returncode == 1
    [row] = json.loads(listed.stdout)
    assert [
        r for r in row["refused_bundles"] if r["bundle"] == str(refused) and r["problem"].startswith(problem)
    ]
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


def _newer_pass(site: Site, started: str = "2099-01-01T00:00:00+00:00") -> Path:
    """The passed drill's bundle, copied and dated after the failed one: all it takes to
    make the asset look tested, were the signature not checked."""
    forged = site.evidence / "2099-01-01-outage"
    shutil.copytree(site.passed, forged)
    drill = json.loads((forged / "drill.json").read_text())
    drill["started"] = started
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


def test_the_newest_failed_bundle_deleted_or_hidden_is_named(site: Site) -> None:
    shutil.rmtree(site.failed)
    asset = _refused(site, site.failed, "missing")
    assert (asset["last_drill_verdict"], asset["last_drill_bundle"]) == ("pass", str(site.passed))


def test_the_newest_failed_bundle_under_a_hidden_name_is_named(site: Site) -> None:
    site.failed.rename(site.evidence / f".{site.failed.name}.partial-0001")
    _refused(site, site.failed, "missing")


def test_an_edited_start_cannot_bury_the_newest_failed_drill(site: Site) -> None:
    drill_json = site.failed / "drill.json"
    drill = json.loads(drill_json.read_text())
    drill_json.write_text(json.dumps(drill | {"verdict": "pass", "started": "2000-01-01T00:00:00+00:00"}))
    _refused(site, site.failed, "drill.json was modified (SHA-256 mismatch)")


def test_files_that_are_not_files_are_refused_not_fatal(site: Site) -> None:
    fifo, link, binary, deep = (site.evidence / f"2099-02-0{i}-outage" for i in (1, 2, 3, 4))
    for bundle in (fifo, link, binary, deep):
        shutil.copytree(site.passed, bundle)
        drill = json.loads((bundle / "drill.json").read_text()) | {"started": f"{bundle.name[:10]}T00:00"}
        (bundle / "drill.json").write_text(json.dumps(drill))  # newer than the failed drill
    (fifo / "SHA256SUMS").unlink()
    os.mkfifo(fifo / "SHA256SUMS")  # nobody writes it: a plain read would wait for ever
    (link / "drill.json").unlink()
    (link / "drill.json").symlink_to("/dev/zero")  # a plain read would fill the memory
    (binary / "SHA256SUMS.sig").write_bytes(b"\xff\xfe" * 40)
    (deep / "drill.json").write_text("[" * 100_000)  # deeper than a parser recurses
    code, asset = site.status()
    assert code == 1
    for bundle, problem in (
        (fifo, "SHA256SUMS is not a regular file"),
        (link, "drill.json is a symbolic link"),
        (binary, "SHA256SUMS.sig is not a signature"),
        (deep, "drill.json was modified (SHA-256 mismatch)"),
    ):
        assert f"drill evidence {bundle} refused: {problem}" in asset["breaches"], asset["breaches"]
    assert asset["last_drill_bundle"] == str(site.failed)


def test_old_evidence_from_before_pinning_is_named_only_by_evidence_verify(site: Site) -> None:
    """A bundle with a pre-pinning bare signature, older than the newest that holds, changes
    nothing: status does not breach on it for ever; `evidence verify` still refuses it."""
    old = site.evidence / "2026-01-01-outage"
    shutil.copytree(site.passed, old)
    (old / "SHA256SUMS.sig").write_text(base64.b64encode(secrets.token_bytes(64)).decode() + "\n")
    code, asset = site.status()
    assert (code, asset["last_drill_bundle"]) == (1, str(site.failed))  # the failed drill's breach
    assert not [b for b in asset["breaches"] if b.startswith("drill evidence")]
    [row] = json.loads(site.lb.run("drill", "list", "--json").stdout)
    assert row["refused_bundles"] == []
    assert site.lb.run("evidence", "verify", str(old), check=False).returncode == 1


def test_a_rotated_drill_key_vouches_only_for_drills_before_its_replacement(site: Site) -> None:
    """The insider kept the drill key in use before `keys rotate --drill` (taken here with
    the recovery key, as the setting-up of what they hold): a drill it signs dated after the
    rotation is refused, and so is one dated between the last genuine drill and the rotation
    (no such run is in the audit log), and a second result for the genuine failed run; the
    genuine bundles it signed before still count."""
    policy = load_policy(site.root / "lifeboat.toml")
    recovery = load_recovery_key(site.root / "keys" / "recovery.key")
    records = RecordsView(runtime.storage_for(policy))
    root = RootKey.from_chain(records.config["id"], [recovery])
    published = lookup(records, root.public, records.config["id"]).published
    assert published is not None
    kept = open_signing_key([recovery.private], published.sealed)
    site.lb.run("keys", "rotate", "--drill", "--recovery-key", str(site.root / "keys" / "recovery.key"))
    after = _newer_pass(site)
    resign(after, kept)
    asset = _refused(site, after, f"signed by key {published.fingerprint}, replaced on")
    assert (asset["last_drill_bundle"], asset["last_drill_verdict"]) == (str(site.failed), "fail")
    shutil.rmtree(after)

    # a millisecond after the failed run started: long before the rotation, which followed
    # that run's subprocess
    later = datetime.fromisoformat(site.failed_started) + timedelta(milliseconds=1)
    between = _newer_pass(site, started=later.isoformat(timespec="milliseconds"))
    resign(between, kept)
    asset = _refused(site, between, "started after the newest run of its drill in the audit log")
    assert (asset["last_drill_bundle"], asset["last_drill_verdict"]) == (str(site.failed), "fail")
    shutil.rmtree(between)

    same_run = _newer_pass(site, started=site.failed_started)
    resign(same_run, kept)
    asset = _refused(site, same_run, f"signed for the same run as {site.failed}, with other results")
    assert (asset["last_drill_bundle"], asset["last_drill_verdict"]) == (str(site.failed), "fail")
    shutil.rmtree(same_run)

    # the same, as a run of a drill the policy does not have, which no audit entry speaks
    # for: no asset's drill, so never an asset's last
    ghost = _newer_pass(site, started=later.isoformat(timespec="milliseconds"))
    drill = json.loads((ghost / "drill.json").read_text()) | {"drill": "ghost"}
    (ghost / "drill.json").write_text(json.dumps(drill))
    resign(ghost, kept)
    code, asset = site.status()
    assert (code, asset["last_drill_bundle"], asset["last_drill_verdict"]) == (1, str(site.failed), "fail")
    assert not [b for b in asset["breaches"] if str(ghost) in b]  # no asset's: not news either


def test_an_older_genuine_pass_put_where_the_audit_log_names_the_failed_one_is_refused(site: Site) -> None:
    shutil.rmtree(site.failed)
    shutil.copytree(site.passed, site.failed)
    asset = _refused(
        site, site.failed, f"not the run the audit log names for it (started {site.failed_started})"
    )
    assert asset["last_drill_verdict"] == "pass"  # the older genuine drill, beside the breach
