"""A drill that reads a copy of the repository signs with the copy's drill key. A copy of a
repository that publishes none (made before init issued one) holds no drill-key record, so
the drill issues one there, signed by the repository's root key: `status` and `drill list`
(which read the primary) trust it, where they used to refuse every result of that drill as
signed by an unknown key. The copy's
storage provider (or anyone with the copy's credentials) gains nothing by it: a drill-key
record planted in the copy, signed by a root of their own, is not trusted, and a pass it
signs is refused and named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from lifeboat.assets.registry import load_policy
from lifeboat.crypto.pinning import fingerprint
from lifeboat.daemon.jobs import build_jobs
from tests.harness import LifeboatCli, PolicyBuilder
from tests.harness.evidence import plant_drill_key, resign


def _site(root: Path) -> LifeboatCli:
    (root / "keys").mkdir()
    (root / "etc").mkdir()
    (root / "etc" / "app.conf").write_text("port = 1\n")
    (
        PolicyBuilder()
        .repository(f"file://{root}/repo", recovery_key="keys/recovery.key")
        .copy("offsite", f"file://{root}/copy")
        .data_class("gold", rpo="1d", rto="1h")
        .files("conf", [root / "etc"], cls="gold")
        .drill(
            "offsite-outage", "full-outage", ["conf"], repository="offsite", evidence_dir=root / "evidence"
        )
        .write(root / "lifeboat.toml")
    )
    return LifeboatCli(root / "lifeboat.toml", cwd=root)


def _conf(lb: LifeboatCli) -> tuple[int, dict[str, Any]]:
    proc = lb.run("status", "--json", check=False)
    return proc.returncode, next(a for a in json.loads(proc.stdout)["assets"] if a["asset"] == "conf")


def test_a_drill_on_a_copy_counts_and_a_key_planted_in_the_copy_does_not(tmp_path: Path) -> None:
    lb = _site(tmp_path)
    lb.run("init")
    # a repository from before init issued a drill key (pre-#14) publishes none
    for record in (tmp_path / "repo" / "records" / "drill-keys").iterdir():
        record.unlink()
    lb.run("backup", "conf")
    lb.run("copy", "offsite")
    drill = lb.json("drill", "run", "offsite-outage")
    assert drill["verdict"] == "pass" and drill["repository"] == "offsite"
    # the key was issued in the copy: the primary publishes none
    assert lb.run("evidence", "verify", drill["bundle"], check=False).returncode != 0

    code, conf = _conf(lb)
    assert (conf["last_drill_verdict"], conf["last_drill_bundle"]) == ("pass", drill["bundle"])
    assert not [b for b in conf["breaches"] if b.startswith("drill evidence")] and code == 0
    [row] = lb.json("drill", "list")
    assert row["last_verdict"] == "pass" and not row.get("refused")

    # the copy out of reach from this host: its key cannot be checked, and the refusal says
    # why rather than naming the genuine drill a forgery
    policy = tmp_path / "lifeboat.toml"
    reachable = policy.read_text()
    copy_url = f'url = "file://{tmp_path}/copy"'
    assert copy_url in reachable
    canary = "canary-s3cret-4711"  # credentials in the endpoint never reach the output
    gone = (
        f'url = "s3://gone/copy"\nendpoint_url = "http://lb:{canary}@127.0.0.1:9"\nallow_insecure_http = true'
    )
    policy.write_text(reachable.replace(copy_url, gone))
    proc = lb.run("status", "--json", check=False)
    assert canary not in proc.stdout + proc.stderr
    code, conf = _conf(lb)
    unread = "or only a copy whose drill-key records could not be read here (copy 'offsite'"
    assert code == 1 and any(
        b.startswith(f"drill evidence {drill['bundle']} refused") for b in conf["breaches"]
    )
    assert any(unread in b for b in conf["breaches"]), conf["breaches"]
    policy.write_text(reachable)

    # the copy's provider plants a drill-key record of its own there and signs a newer pass
    offsite = tmp_path / "offsite.toml"
    primary = (tmp_path / "lifeboat.toml").read_text()
    offsite.write_text(primary.replace(f"{tmp_path}/repo", f"{tmp_path}/copy"))
    _, planted = plant_drill_key(offsite)
    forged = tmp_path / "evidence" / "2099-01-01-offsite-outage"
    shutil.copytree(drill["bundle"], forged)
    signed = json.loads((forged / "drill.json").read_text())
    (forged / "drill.json").write_text(json.dumps(signed | {"started": "2099-01-01T00:00:00+00:00"}))
    resign(forged, planted)

    code, conf = _conf(lb)
    unpublished = f"signed by key {fingerprint(planted.public_key())}, which no root-signed drill-key record"
    assert code == 1 and conf["last_drill_bundle"] == drill["bundle"]
    assert any(b.startswith(f"drill evidence {forged} refused: {unpublished}") for b in conf["breaches"])

    # a rotation on the primary retires the copy's key too (the record names only the
    # primary's): a drill on the copy before the rotation reaches it is refused, named ...
    shutil.rmtree(forged)
    lb.run("keys", "rotate", "--drill")
    proc = lb.run("drill", "run", "offsite-outage", "--json")
    stale = json.loads(proc.stdout)
    assert stale["signing_key"] == drill["signing_key"]  # the copy has not had the new key yet
    # the drill says so, with the primary in reach (a drill on a copy never needs it)
    assert "status will refuse this drill's evidence; run 'lifeboat copy offsite'" in proc.stderr
    # and so does the daemon's run of it, in the daemon's log
    lines: list[str] = []
    daemon_drill = next(
        job
        for job in build_jobs(load_policy(tmp_path / "lifeboat.toml"), lines.append)
        if job.name == "drill:offsite-outage"
    )
    daemon_drill.run()
    assert any(
        line.startswith("drill:offsite-outage: warning: the repository retired this copy's drill key")
        and "run 'lifeboat copy offsite'" in line
        for line in lines
    ), lines
    code, conf = _conf(lb)
    retired = f"drill evidence {stale['bundle']} refused: signed by key {drill['signing_key']}, replaced on"
    assert code == 1 and any(b.startswith(retired) for b in conf["breaches"])
    # ... and once `copy` has taken the new key there, the next drill signs with it and counts
    lb.run("copy", "offsite")
    fresh = lb.json("drill", "run", "offsite-outage")
    assert fresh["signing_key"] != drill["signing_key"]
    code, conf = _conf(lb)
    assert (code, conf["last_drill_bundle"], conf["last_drill_verdict"]) == (0, fresh["bundle"], "pass")
