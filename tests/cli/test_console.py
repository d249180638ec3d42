"""What lifeboat prints is printed as it is named: file names and keys are never read as
rich markup or emoji codes (a key file `a:fire:b.pem` once printed as `a🔥b.pem`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifeboat.cli.output import make_console, print_lines
from lifeboat.escaped_text import child_error, shown, unshown
from tests.cli.conftest import cli_for
from tests.harness import PolicyBuilder


def test_names_with_emoji_codes_and_brackets_print_as_they_are() -> None:
    console = make_console()
    with console.capture() as captured:
        console.print("OK platform-keys/a:fire:b.pem [bold]x[/bold]", markup=False)
    assert captured.get() == "OK platform-keys/a:fire:b.pem [bold]x[/bold]\n"


def test_summary_lines_print_as_named_with_what_a_terminal_acts_on_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A restore's summary: plain lines exactly as the console printed them, markup and
    emoji codes as they are; an escape sequence, a carriage return or a tab in a file name
    shown escaped, never sent to the terminal (rich passed escape sequences through); a
    name that is not UTF-8 printed too; and rich not even imported."""
    plain = ["restored 3 files", "  ok   keys/a:fire:b.pem [bold]x[/bold]", "  ok   ключи/鍵.pem"]
    print_lines(plain)
    ours = capsys.readouterr().out
    make_console().print("\n".join(plain), soft_wrap=True, markup=False)
    assert ours == capsys.readouterr().out

    odd = [
        "  ok   \x1b]0;owned\x07title\x1b[2J",
        "  ok   cr\rhere\tand tab",
        "  ok   " + os.fsdecode(b"bad-\xff.key"),
        "  ok   named \\x1b by hand",
    ]
    print_lines(odd)
    assert capsys.readouterr().out.splitlines() == [
        "  ok   \\x1b]0;owned\\x07title\\x1b[2J",
        "  ok   cr\\rhere\\tand tab",
        "  ok   bad-\\udcff.key",
        "  ok   named \\\\x1b by hand",  # told from a name that holds ESC
    ]

    script = (
        "from lifeboat.cli.output import print_lines; import sys; print_lines(sys.argv[1:]); "
        "print(sorted(m for m in sys.modules if m.startswith('rich')), file=sys.stderr)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, *plain, odd[0]], capture_output=True, text=True, check=True
    )
    assert "\x1b" not in proc.stdout and proc.stderr.strip() == "[]"


def test_a_backups_lines_name_paths_with_what_a_terminal_acts_on_escaped(tmp_path: Path) -> None:
    """`lifeboat backup` of two assets, one of whose paths is named with escape sequences and
    is gone: the stored asset's line as before, the failed one's path shown escaped (rich
    printed it raw), and the command, on a fresh interpreter, never imports rich."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("a")
    gone = tmp_path / "gone-\x1b]0;owned\x07"
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .data_class("standard", rpo="1d", rto="1h")
        .files("stored", [source])
        .files("gone", [gone])
        .write(tmp_path / "lifeboat.toml")
    )
    cli = cli_for(policy, tmp_path, source)
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    script = (
        "import sys; from lifeboat.cli.entry import main\n"
        "import atexit; atexit.register(lambda: print(sorted(m for m in sys.modules if m.startswith('rich')),"
        " file=sys.stderr))\n"
        "main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "--config", str(policy), "backup"],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli.environment(),
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert re.fullmatch(r"stored: snapshot [0-9a-f]{12}, 1 files, 1 B \(.* new, .* stored\) in .*", lines[0])
    assert lines[1] == f"backup gone failed: path {tmp_path}/gone-\\x1b]0;owned\\x07 does not exist"
    assert done.stderr.strip().splitlines()[-1] == "[]"  # rich: not imported
    # one asset: its failure is the command's error, on stderr, escaped the same way; and
    # the fast path's errors too (an asset name given on the command line)
    alone = cli.run("backup", "gone", check=False)
    assert alone.returncode != 0 and "\x1b" not in alone.stderr and "\x07" not in alone.stderr
    assert f"lifeboat: error: path {tmp_path}/gone-\\x1b]0;owned\\x07 does not exist" in alone.stderr
    fast = cli.run("snapshots", "--asset", "\x1b]0;owned\x07", check=False)
    assert fast.returncode != 0 and "\x1b" not in fast.stderr
    # the message quotes the name with repr (\x1b), whose backslashes are then doubled
    assert "unknown asset '\\\\x1b]0;owned\\\\x07'" in fast.stderr


CLOSED_STDERR = 'p="$1"; shift; exec "$0" -m lifeboat --config "$p" "$@" 2>&-'


@pytest.mark.parametrize("command", [["snapshots", "--json"], ["check", "--json"]])
def test_an_error_with_standard_error_closed_never_reaches_standard_output(
    tmp_path: Path, command: list[str]
) -> None:
    """Standard error closed (``2>&-``, where Python has no sys.stderr): the error is
    dropped, not written where a script reads the command's JSON; the exit code still says
    it failed. On the fast path (`snapshots`) and the typer path (`check`) alike."""
    policy = tmp_path / "missing.toml"
    done = subprocess.run(
        ["sh", "-c", CLOSED_STDERR, sys.executable, str(policy), *command],
        capture_output=False,
        stdout=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    assert done.returncode not in (0, 70) and done.stdout == ""


@given(st.text(st.characters(blacklist_categories=())))
def test_what_is_shown_escaped_reads_back_as_it_was(text: str) -> None:
    assert unshown(shown(text)) == text


def test_a_childs_error_is_read_back_as_raised_so_the_parent_escapes_it_once(tmp_path: Path) -> None:
    """The sharded backup and restore, and `pg configure`'s write probe, tell a child's
    error in their own, which escapes it: read back still escaped, a backslash in a path
    showed four times and an escape sequence as ``\\x1b``."""
    policy = tmp_path / "no\\pe\x1b[2J.toml"
    child = subprocess.run(
        [sys.executable, "-m", "lifeboat", "--config", str(policy), "snapshots"],
        capture_output=True,
        text=True,
    )
    assert child.returncode == 2 and "\x1b" not in child.stderr
    told = child_error(child.stderr)
    assert told == f"policy file {policy} does not exist"
    assert shown(told) in child.stderr  # the parent's line is the child's line
    assert child_error("Traceback (most recent call last):\n  boom\n") is None
