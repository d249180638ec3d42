"""A malicious insider with the state dir (issue #14) against what `status` keeps and reads
there (the status slice; the audit log, last test).

`status` keeps what it reads of a validated policy (cli/policy_slice.py,
ops/status_view.py): each asset's data class, its RPO and RTO, and the dsn it asks about
archiving, which may carry the server's password. Rewritten to drop an asset or widen an
RPO, it would have monitoring report a breach as fine; read, it would give the insider the
database. The file is encrypted under a key derived from the key file, which the state dir
does not hold: the password is not in it, and a forged file is ignored (the policy is
validated again). A control shows the same forgery encrypted with the key would be followed,
so the key is what stops it. The defender is the real `lifeboat` executable."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from lifeboat import runtime
from lifeboat.assets.registry import load_policy
from lifeboat.repo.local_cache import CacheSeal
from tests.harness import LifeboatCli, PolicyBuilder

CANARY_PASSWORD = "canary-pg-password-7f3a91"


@pytest.fixture
def cli(tmp_path: Path) -> LifeboatCli:
    """A files asset backed up, and a PostgreSQL asset whose dsn carries a password and
    that was never backed up (no server: status's probe of it gets no answer)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a\n")
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .state(tmp_path / "state")
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 2})
        .files("docs", [tmp_path / "data"])
        .postgres("db", dsn=f"host=/nonexistent dbname=postgres password={CANARY_PASSWORD}")
        .write(tmp_path / "lifeboat.toml")
    )
    cli = LifeboatCli(policy=policy, cwd=tmp_path)
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    cli.run("backup", "docs")
    return cli


def _status(cli: LifeboatCli) -> tuple[int, dict[str, Any]]:
    proc = cli.run("status", "--json", check=False)
    assert CANARY_PASSWORD not in proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _kept(cli: LifeboatCli) -> Path:
    """The status slice's file (named by the policy file and its purpose, as
    cli/policy_slice.py names it)."""
    name = hashlib.sha256(f"{Path(cli.policy).absolute()}\0status\0".encode()).hexdigest()[:16]
    path = load_policy(cli.policy).state_dir / "cache" / "policy-slice" / name
    assert path.exists()
    return path


def _without_db(cli: LifeboatCli, kept: Path) -> bytes:
    """The kept entry as the insider would like it: the never backed up asset gone."""
    data = runtime.local_seal(load_policy(cli.policy)).decrypt(f"policy-slice/{kept.name}", kept.read_bytes())
    assert data is not None  # (the test reads it with the key; the insider cannot)
    entry = json.loads(data)
    del entry["slice"]["status"]["assets"]["db"]
    return json.dumps(entry).encode()


def test_the_kept_status_settings_hold_no_password_in_the_clear(cli: LifeboatCli) -> None:
    code, status = _status(cli)
    breaches = {a["asset"]: a["breaches"] for a in status["assets"]}
    assert code == 1 and breaches["db"] == ["never backed up"]
    _kept(cli)
    state = load_policy(cli.policy).state_dir
    leaked = [p for p in state.rglob("*") if p.is_file() and CANARY_PASSWORD.encode() in p.read_bytes()]
    assert leaked == []
    assert _status(cli)[0] == 1  # and the kept slice, read back, still judges db


def test_a_forged_status_slice_does_not_hide_a_breach(cli: LifeboatCli) -> None:
    _status(cli)
    kept = _kept(cli)
    insiders = CacheSeal(lambda context: hashlib.sha256(b"insider's key" + context).digest())
    kept.write_bytes(insiders.encrypt(f"policy-slice/{kept.name}", _without_db(cli, kept)))
    code, status = _status(cli)
    assert code == 1 and {a["asset"] for a in status["assets"]} == {"docs", "db"}
    kept.write_bytes(_without_db(cli, kept))  # plain JSON (the genuine digest), no envelope
    code, status = _status(cli)
    assert code == 1 and {a["asset"] for a in status["assets"]} == {"docs", "db"}


def test_control_the_same_forgery_under_the_key_is_followed(cli: LifeboatCli) -> None:
    _status(cli)
    kept = _kept(cli)
    seal = runtime.local_seal(load_policy(cli.policy))
    kept.write_bytes(seal.encrypt(f"policy-slice/{kept.name}", _without_db(cli, kept)))
    code, status = _status(cli)
    assert code == 0 and [a["asset"] for a in status["assets"]] == ["docs"]


def test_a_fifo_or_a_link_at_the_audit_log_stops_status_with_one_line(
    cli: LifeboatCli, tmp_path: Path
) -> None:
    """The insider swaps the audit log, or the record of its signed copies, for a FIFO
    (which would hold status, and the daemon's refresh, up for ever) or a link to a file
    elsewhere: status refuses to read through it, with one line naming it. Bytes that are
    not text in the log are read past."""
    log = load_policy(cli.policy).state_dir / "audit.jsonl"
    log.write_bytes(log.read_bytes() + b"\xff\xfe not text\n")
    assert _status(cli)[0] == 1  # db is never backed up: a breach, not a crash
    anchored = log.with_name("audit.anchored.json")  # what status reads of the log's copies
    assert anchored.exists()
    for path in (log, anchored):
        path.rename(tmp_path / "kept")
        for plant in ("fifo", "link"):
            if plant == "fifo":
                os.mkfifo(path)
            else:
                path.symlink_to(tmp_path / "kept")
            # 'audit verify' reads the log alone, then against the repository's copies
            local = [("audit", "verify", "--local-only"), ("audit", "verify")] if path == log else []
            for command in [("status", "--json"), *local]:
                proc = cli.run(*command, check=False)
                assert proc.returncode == 2 and "Traceback" not in proc.stderr, (command, proc.stderr)
                assert str(path) in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2
            path.unlink()
        (tmp_path / "kept").rename(path)
