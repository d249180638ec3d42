"""`lifeboat restore` through the restore service: one audit entry per restore, a failed
restore audited too, and the files report unchanged (text and JSON)."""

from __future__ import annotations

import json

import pytest

# the `cli` fixture runs against a file:// repository and the moto S3 endpoint; one is enough here
pytestmark = pytest.mark.parametrize("cli", ["file"], indirect=True)


def _restores(cli) -> list[dict]:
    lines = (cli.root / ".lifeboat" / "audit.jsonl").read_text().splitlines()
    return [entry for entry in map(json.loads, lines) if entry["operation"] == "restore"]


def test_restores_are_audited_once_each_and_a_failed_one_says_why(cli):
    (cli.source / "a.conf").write_text("listen = 1\n")
    snapshot = json.loads(cli.run("backup", "config", "--json").stdout)[0]["snapshot"]
    key = str(cli.root / "recovery.key")
    target = cli.root / "restored"

    done = cli.run("restore", "config", "--target", str(target), "--recovery-key", key, "--json")
    report = json.loads(done.stdout)
    assert list(report) == [
        "ok", "asset", "snapshot", "target", "files", "dirs", "symlinks", "bytes", "verified", "seconds"
    ]  # fmt: skip
    assert report["snapshot"] == snapshot and report["files"] == 1 and report["verified"] == 1

    refused = cli.run("restore", "config", "--target", str(target), "--recovery-key", key, check=False)
    assert refused.returncode == 2 and "not empty" in refused.stderr and "Traceback" not in refused.stderr

    first, second = _restores(cli)
    assert (first["outcome"], first["details"]["snapshot"]) == ("ok", snapshot)
    assert first["details"]["target"] == str(target)
    assert second["outcome"] == "failed" and "not empty" in second["details"]["error"]
    assert second["asset"] == "config" and second["details"]["target"] == str(target)


def test_the_text_report_of_a_files_restore_is_one_line(cli):
    (cli.source / "a.conf").write_text("listen = 1\n")
    cli.run("backup", "config")
    target = cli.root / "restored"
    out = cli.run(
        "restore", "config", "--target", str(target), "--recovery-key", str(cli.root / "recovery.key")
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout
    assert lines[0].startswith("config: restored 1 files (") and lines[0].endswith("1 files verified")
    assert f"into {target} in " in lines[0]
