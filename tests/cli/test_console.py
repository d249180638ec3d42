"""What lifeboat prints is printed as it is named: file names and keys are never read as
rich markup or emoji codes (a key file `a:fire:b.pem` once printed as `a🔥b.pem`)."""

from __future__ import annotations

from lifeboat.cli.output import make_console


def test_names_with_emoji_codes_and_brackets_print_as_they_are() -> None:
    console = make_console()
    with console.capture() as captured:
        console.print("OK platform-keys/a:fire:b.pem [bold]x[/bold]", markup=False)
    assert captured.get() == "OK platform-keys/a:fire:b.pem [bold]x[/bold]\n"
