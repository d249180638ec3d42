"""Forged drill evidence, each attack using only what its actor has (issue #14):

* anyone with a bundle (an insider, a vendor) re-signs an edited bundle with a key of their
  own: `evidence verify --key <the pinned fingerprint>` refuses it, naming both keys;
* an edited bundle that is not re-signed is refused, naming the file;
* a compromised backup host (its backup key and the storage credentials) plants drill-key
  records: the real drill still signs with the real key, and reports the plants;
* an insider with the state dir finds no drill signing key there (not in clear, not at all).

The "real" drill runs through the `lifeboat` executable with the recovery key, as an
operator would; the attackers act in-process with lifeboat's own library and nothing more.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from lifeboat import runtime
from lifeboat.assets.registry import load_policy
from lifeboat.crypto.keys import load_backup_key, load_recovery_key
from lifeboat.crypto.pinning import fingerprint, open_signing_key
from lifeboat.crypto.writers import RootKey
from lifeboat.drills.signing_key import lookup
from lifeboat.repo.records import RecordsView
from tests.harness import LifeboatCli
from tests.harness.evidence import drilled_site, plant_drill_key, resign


@dataclass
class Site:
    """A repository initialised by the operator, one files asset backed up, one drill."""

    lb: LifeboatCli
    root: Path
    pinned: str  # the fingerprint `init` printed: what an auditor pins

    @property
    def policy(self) -> Path:
        return self.root / "lifeboat.toml"

    def drill(self) -> dict:
        proc = self.lb.run("drill", "run", "outage", "--json", check=False)
        assert proc.returncode in (0, 1), proc.stderr
        return json.loads(proc.stdout)


def _site(root: Path) -> Site:
    lb = drilled_site(root, rpo="1h", rto="10m")
    pinned = json.loads(lb.run("init", "--json").stdout)["drill_key_fingerprint"]
    lb.run("backup", "conf")
    return Site(lb, root, pinned)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return _site(tmp_path_factory.mktemp("forged-evidence"))


def test_planted_drill_key_records_do_not_stop_or_steal_the_evidence(site: Site) -> None:
    planted, _ = plant_drill_key(site.policy)
    proc = site.lb.run("drill", "run", "outage", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    for name in planted:
        assert f"refused drill-key record records/{name}" in proc.stdout, proc.stdout
    assert f"signed by drill key {site.pinned}" in proc.stdout
    out = site.drill()  # again, as JSON: the plants are in the signed evidence too
    assert out["signing_key"] == site.pinned
    refused = out["refused_drill_key_records"]
    assert any(planted[0] in r and "another key than the repository's root key" in r for r in refused), (
        refused
    )
    assert any(r.startswith("records/drill-key.json: not signed") for r in refused), refused
    assert site.lb.run("evidence", "verify", out["bundle"], "--key", site.pinned).returncode == 0
    # the operator's audit log names the plants as well
    drills = [json.loads(line) for line in (site.root / ".lifeboat" / "audit.jsonl").read_text().splitlines()]
    last = [e for e in drills if e["operation"] == "drill"][-1]
    assert last["details"]["signed_by"] == site.pinned and len(last["details"]["refused_records"]) == 2
    # the repository view (without --key) ignores the plant too, and says where the key came from
    found = site.lb.run("evidence", "verify", out["bundle"])
    assert f"signed by {site.pinned}" in found.stdout and "root-signed drill-key record" in found.stdout
    assert "refused drill-key record" in found.stdout


def test_a_bundle_signed_with_another_key_is_refused_naming_both_keys(site: Site) -> None:
    genuine = Path(site.drill()["bundle"])
    forged = site.root / "forged"
    shutil.copytree(genuine, forged)
    drill = json.loads((forged / "drill.json").read_text())
    drill["verdict"], drill["total_rto_s"] = "pass", 1.0
    (forged / "drill.json").write_text(json.dumps(drill, indent=2, sort_keys=True) + "\n")
    attacker = Ed25519PrivateKey.generate()
    resign(forged, attacker)
    theirs = fingerprint(attacker.public_key())

    refused = site.lb.run("evidence", "verify", str(forged), "--key", site.pinned, check=False)
    assert refused.returncode == 1
    assert f"signed by key {theirs}, not by the pinned key {site.pinned}" in refused.stdout
    # the repository's record does not vouch for it either
    assert site.lb.run("evidence", "verify", str(forged), check=False).returncode == 1
    # pinning the attacker's own key is what makes it verify: the pin is the trust
    assert site.lb.run("evidence", "verify", str(forged), "--key", theirs).returncode == 0


def test_an_edited_bundle_is_refused(site: Site) -> None:
    edited = site.root / "edited"
    shutil.copytree(Path(site.drill()["bundle"]), edited)
    report = edited / "report.md"
    report.write_text(report.read_text() + "\nAll targets met.\n")
    proc = site.lb.run("evidence", "verify", str(edited), "--key", site.pinned, check=False)
    assert proc.returncode == 1 and "report.md was modified (SHA-256 mismatch)" in proc.stdout
    # a bare signature in the pre-pinning form names no signer: refused, never trusted
    (edited / "SHA256SUMS.sig").write_text(base64.b64encode(secrets.token_bytes(64)).decode() + "\n")
    bare = site.lb.run("evidence", "verify", str(edited), "--key", site.pinned, check=False)
    assert bare.returncode == 1 and "SHA256SUMS.sig is not a pinned drill-key signature" in bare.stdout
    bad_pin = site.lb.run("evidence", "verify", str(edited), "--key", "not-a-key", check=False)
    assert bad_pin.returncode == 2 and bad_pin.stderr.startswith("lifeboat: error: the pinned key is not")
    assert len(bad_pin.stderr.strip().splitlines()) <= 2  # the error and its hint, no traceback


def test_the_state_dir_holds_no_drill_signing_key(site: Site) -> None:
    """An insider with the state dir (and even the repository's bytes) has no signing key:
    it exists only sealed to the recovery key."""
    bundle = Path(site.drill()["bundle"])
    recovery = load_recovery_key(site.root / "keys" / "recovery.key")
    records = RecordsView(runtime.storage_for(load_policy(site.policy)))
    root = RootKey.from_chain(records.config["id"], [recovery])
    published = lookup(records, root.public, records.config["id"]).published
    assert published is not None and published.fingerprint == site.pinned
    signing = open_signing_key([recovery.private], published.sealed)
    private = signing.private_bytes_raw()
    backup = load_backup_key(_keyfile(site))
    pkcs8 = signing.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    forms = [*_encodings(private), base64.b64encode(pkcs8)]  # raw, hex, base64, a PEM's body
    canaries = {
        "drill key": forms,
        "recovery key": _encodings(recovery.secret),
        "id key": _encodings(backup.id_key),
    }
    state = site.root / ".lifeboat"
    assert any(state.rglob("*")), "the state dir is where the drill ran"
    for where in (state, site.root / "repo"):
        for path in (p for p in where.rglob("*") if p.is_file()):
            data = path.read_bytes()
            assert not any(form in data for form in forms), f"drill signing key in clear in {path}"
    for path in (p for p in bundle.rglob("*") if p.is_file()):  # and no secret in the evidence
        data = path.read_bytes()
        for what, encoded in canaries.items():
            assert not any(form in data for form in encoded), f"{what} in the bundle's {path.name}"
    assert not (state / "drill-signing.key").exists()


def _keyfile(site: Site) -> Path:
    return Path(load_policy(site.policy).repository.keyfile)


def _encodings(secret: bytes) -> list[bytes]:
    return [
        secret,
        secret.hex().encode(),
        base64.b64encode(secret),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def test_an_older_repository_with_a_plant_gets_its_genuine_key_at_the_first_drill(tmp_path: Path) -> None:
    """A repository from before the root-signed record (none published) where a host planted
    one first: the first drill issues the genuine key (sealed, root-signed) and reports the plant."""
    site = _site(tmp_path)
    for record in (tmp_path / "repo" / "records" / "drill-keys").iterdir():
        record.unlink()  # what a repository initialised before #14 looks like
    planted, _ = plant_drill_key(site.policy)
    out = site.drill()
    assert out["signing_key"].startswith("sha256:") and out["signing_key"] != site.pinned
    assert len(out["refused_drill_key_records"]) == 2 and planted[0] in out["refused_drill_key_records"][0]
    assert site.lb.run("evidence", "verify", out["bundle"], "--key", out["signing_key"]).returncode == 0
    assert site.drill()["signing_key"] == out["signing_key"]  # issued once, then reused


def test_a_config_naming_another_root_key_is_refused_by_the_recovery_side(tmp_path: Path) -> None:
    # the storage adversary swaps config's root_public for its own root, under which its
    # planted drill-key records would verify; whoever holds the recovery key derives the
    # real root and is told the config was rewritten, not shown the planter's key
    site = _site(tmp_path)
    bundle = site.drill()["bundle"]
    config_path = site.root / "repo" / "config"
    config = json.loads(config_path.read_text())
    theirs = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    config["root_public"] = base64.b64encode(theirs).decode()
    config_path.chmod(0o644)
    config_path.write_text(json.dumps(config, indent=2))
    recovery = str(site.root / "keys" / "recovery.key")
    refused = site.lb.run("evidence", "verify", bundle, "--recovery-key", recovery, check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "names a root key that is not this recovery key's" in refused.stderr, refused.stderr
    # the auditor's pinned fingerprint still verifies offline, config or not
    assert site.lb.run("evidence", "verify", bundle, "--key", site.pinned).returncode == 0
