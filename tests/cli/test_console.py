"""What lifeboat prints is printed as it is named: file names and keys are never read as
rich markup or emoji codes (a key file `a:fire:b.pem` once printed as `a🔥b.pem`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lifeboat.cli.output import make_console, print_lines


def test_names_with_emoji_codes_and_brackets_print_as_they_are() -> None:
    console = make_console()
    with console.capture() as captured:
        console.print("OK platform-keys/a:fire:b.pem [bold]x[/bold]", markup=False)
    assert captured.get() == "OK platform-keys/a:fire:b.pem [bold]x[/bold]\n"


def test_lines_print_as_the_console_prints_them_and_only_odd_ones_need_rich(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A restore's summary is written straight to standard output when every line is
    printable, through rich otherwise: byte for byte what the console prints either way
    (the control codes it takes out of a file name, a tab expanded), and rich is not
    even imported for plain lines."""
    plain = ["restored 3 files", "  ok   keys/a:fire:b.pem [bold]x[/bold]", "  ok   ключи/鍵.pem"]
    odd = ["  ok   tab\there", "  ok   cr\rhere", "  ok   bell\a and form\ffeed"]
    for lines in (plain, odd, plain + odd):
        print_lines(lines)
        ours = capsys.readouterr().out
        make_console().print("\n".join(lines), soft_wrap=True, markup=False)
        assert ours == capsys.readouterr().out

    script = (
        "from lifeboat.cli.output import print_lines; import sys; print_lines(sys.argv[1:]); "
        "print(sorted(m for m in sys.modules if m.startswith('rich')), file=sys.stderr)"
    )
    for lines, rich_loaded in ((plain, False), (odd, True)):
        proc = subprocess.run(
            [sys.executable, "-c", script, *lines], capture_output=True, text=True, check=True
        )
        assert proc.stdout == "".join(
            line.replace("\r", "").replace("\a", "").replace("\f", "").expandtabs(8) + "\n" for line in lines
        )
        assert (proc.stderr.strip() != "[]") is rich_loaded
