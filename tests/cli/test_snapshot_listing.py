"""`lifeboat snapshots` as a person reads it: one aligned line per snapshot, damaged ones
last, every value printed as it is (never read as markup)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from lifeboat.cli.columns import aligned
from tests.cli.conftest import Cli, write_policy


def test_columns_are_as_wide_as_their_widest_value_and_numbers_are_right_aligned() -> None:
    lines = aligned(("id", "host", "files"), [["a1", "web-1", "7"], ["b2", "ホスト", "1200"]], right={2})
    assert lines == [
        "id  host    files",
        "a1  web-1       7",
        "b2  ホスト   1200",  # two cells per wide character: the columns still line up
    ]


def test_a_value_that_looks_like_markup_is_kept_as_it_is() -> None:
    assert aligned(("host",), [["[red]web[/red]"]]) == ["host", "[red]web[/red]"]


def test_the_listing_has_one_aligned_line_per_snapshot_and_damaged_ones_last(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.bin").write_bytes(os.urandom(4096))
    policy = write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}")
    cli = Cli(policy=policy, root=tmp_path, source=source)
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    for _ in range(3):
        cli.run("backup", "config")
    snaps = json.loads(cli.run("snapshots", "--json").stdout)
    victim = tmp_path / "repo" / "snapshots" / snaps[1]["id"]
    victim.chmod(0o600)
    victim.write_bytes(victim.read_bytes()[:-10])

    listing = cli.run("snapshots", check=False)

    assert listing.returncode == 1, listing.stderr
    lines = listing.stdout.splitlines()
    header, rows = lines[0], lines[1:4]
    assert header.split() == ["id", "time", "(UTC)", "asset", "kind", "host", "files", "size", "added"]
    good = [s for s in snaps if s["id"] != snaps[1]["id"]]
    for row, snap in zip(rows[:2], good, strict=True):
        assert row.split()[:5] == [snap["id"][:12], *snap["time"][:19].split("T"), "config", "files"]
        assert socket.gethostname() in row
        # "files" is right-aligned: its last digit ends where the header's "files" ends
        assert row[: header.index("files") + len("files")].endswith(str(snap["stats"]["files"]))
    assert rows[2].split()[:2] == [snaps[1]["id"][:8], "damaged"]
    assert "2 snapshot(s)" in listing.stdout and "1 damaged snapshot(s)" in listing.stdout


def test_a_tab_or_a_control_code_in_a_value_is_shown_escaped_and_the_columns_still_line_up() -> None:
    lines = aligned(("host", "files"), [["a\tb", "7"], ["web\r-1", "8"], ["db-1", "12"]], right={1})
    assert lines == ["host     files", "a\\tb         7", "web\\r-1      8", "db-1        12"]
