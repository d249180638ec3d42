"""What lifeboat prints is printed as it is named: file names and keys are never read as
rich markup or emoji codes (a key file `a:fire:b.pem` once printed as `a🔥b.pem`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lifeboat.cli.output import make_console, print_lines


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
