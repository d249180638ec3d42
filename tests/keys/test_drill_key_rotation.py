"""`keys rotate --drill`: a new drill signing key published in a new root-signed record.
Evidence the old key signed still verifies against the fingerprint the auditor pinned; new
drills sign with the new key, and the old pin does not vouch for them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.attacks.test_forged_evidence import _site


def test_rotating_the_drill_key_keeps_old_evidence_verifiable_and_signs_new_drills_with_the_new_key(
    tmp_path: Path,
) -> None:
    site = _site(tmp_path)
    before = site.drill()
    assert before["signing_key"] == site.pinned

    # the recovery side only: this policy names no share, and its recovery key file is gone
    recovery_key = tmp_path / "keys" / "recovery.key"
    moved = recovery_key.rename(tmp_path / "recovery.key")
    refused = site.lb.run("keys", "rotate", "--drill", check=False)
    assert refused.returncode != 0 and refused.stderr.startswith("lifeboat: error: ")
    assert "recovery key" in refused.stderr and "Traceback" not in refused.stderr
    moved.rename(recovery_key)
    mixed = site.lb.run("keys", "rotate", "--drill", "--recovery", check=False)
    assert mixed.returncode != 0 and "--drill rotates the drill signing key alone" in mixed.stderr

    recovery = ["--recovery-key", str(tmp_path / "keys" / "recovery.key")]
    text = site.lb.run("keys", "rotate", "--drill", *recovery).stdout
    assert f"drill signing key rotated: {site.pinned} -> sha256:" in text
    rotated = site.lb.json("keys", "rotate", "--drill", *recovery)["drill_key"]
    assert rotated["old_fingerprint"] != site.pinned  # the second rotation replaced the first's key
    new = rotated["new_fingerprint"]
    assert new.startswith("sha256:") and new not in (site.pinned, rotated["old_fingerprint"])

    after = site.drill()
    assert after["signing_key"] == new
    verify = ("evidence", "verify")
    assert site.lb.run(*verify, before["bundle"], "--key", site.pinned).returncode == 0
    assert site.lb.run(*verify, after["bundle"], "--key", new).returncode == 0
    stale_pin = site.lb.run(*verify, after["bundle"], "--key", site.pinned, check=False)
    assert stale_pin.returncode == 1 and f"not by the pinned key {site.pinned}" in stale_pin.stdout
    published = site.lb.run(*verify, after["bundle"])  # the repository now publishes the new key
    assert f"signed by {new}" in published.stdout

    audit = [json.loads(line) for line in (tmp_path / ".lifeboat" / "audit.jsonl").read_text().splitlines()]
    entries = [e for e in audit if e["operation"] == "keys-rotate-drill"]
    assert [e["details"]["new_fingerprint"] for e in entries if e["outcome"] == "ok"][-1] == new
    assert entries[-1]["details"]["old_fingerprint"] == rotated["old_fingerprint"]
    # the state dir and the outputs hold no private drill key: the records hold it sealed
    assert not any(
        "PRIVATE KEY" in p.read_text(errors="replace")
        for p in (tmp_path / ".lifeboat").rglob("*")
        if p.is_file()
    )
