"""A compromised backup host against the operator's terminal. The attacker holds its own
writer key file and the repository's storage; it writes snapshots whose host is named
with terminal escape sequences (retitle the window, clear the screen, move the cursor),
beside a genuine snapshot of a file named with them. The operator runs the real `lifeboat
snapshots` and restores the genuine snapshot: what they print shows each sequence escaped,
and no escape character reaches the terminal. (A keys restore's summary, which names its
files, prints them through the same escaping: tests/cli/test_console.py.) Real processes,
a real repository and files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lifeboat.crypto.keys import load_backup_key
from lifeboat.repo import Repository
from lifeboat.storage import open_storage
from tests.cli.conftest import Cli, write_policy

EVIL = "web-1\x1b]0;owned\x07\x1b[2J\x1b[1;1H"


def test_escape_sequences_a_writer_chose_are_shown_escaped_never_sent_to_the_terminal(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / f"key{EVIL}.pem").write_bytes(os.urandom(64))
    policy = write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}")
    cli = Cli(policy=policy, root=tmp_path, source=source)
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    cli.run("backup", "config")  # the file with the sequences in its name
    [genuine] = json.loads(cli.run("snapshots", "--json").stdout)

    # The compromised host: its key file and the storage, nothing else.
    attacker = Repository.open(
        open_storage(f"file://{tmp_path / 'repo'}"),
        backup_key=load_backup_key(tmp_path / "keys" / "backup.key"),
    )
    with attacker.backup("config", "files", host=EVIL) as session:
        session.stream_tree()
        session.commit()

    listing = cli.run("snapshots")
    target = tmp_path / "restored"
    restored = cli.run(
        "restore",
        "config",
        "--snapshot",
        genuine["id"],
        "--target",
        str(target),
        "--recovery-key",
        str(tmp_path / "recovery.key"),
    )

    for out in (listing.stdout, restored.stdout):
        assert "\x1b" not in out and "\x07" not in out
    assert "web-1\\x1b]0;owned\\x07\\x1b[2J\\x1b[1;1H" in listing.stdout
    assert sum(1 for line in listing.stdout.splitlines() if line.startswith(genuine["id"][:12])) == 1
    assert (target / "source" / f"key{EVIL}.pem").read_bytes() == (source / f"key{EVIL}.pem").read_bytes()
