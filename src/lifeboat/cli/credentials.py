"""The options that prove a command may read (--recovery-key, --share, --passphrase-file),
turned into credentials. Secrets come from files or the terminal, never from argv."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from lifeboat.crypto.credentials import Credentials

RecoveryKeyOption = Annotated[
    Path | None, typer.Option("--recovery-key", help="Recovery key file (or use --share).")
]
ShareOption = Annotated[
    list[Path] | None,
    typer.Option("--share", help="A custodian's share file (repeat M times); prompted on a terminal."),
]
PassphraseOption = Annotated[
    list[Path] | None,
    typer.Option("--passphrase-file", help="A file holding a custodian's share passphrase (repeatable)."),
]


def terminal_prompt(label: str, secret: bool) -> str:
    """Ask on the terminal, on stderr so --json output stays clean; words are not echoed."""
    # click's own prompt, although typer vendors a copy: typer 0.29's prompt left the share
    # prompt after the custodian's name unanswered on a terminal (tried and reverted; see
    # tests/keys/test_recovery_rotation.py::test_custodians_type_their_words_on_a_terminal)
    try:
        return str(click.prompt(label, hide_input=secret, err=True, default="", show_default=False))
    except click.Abort:
        from lifeboat.errors import KeyError_

        raise KeyError_("no share entered") from None


def credentials_options(
    recovery_key: Path | None, shares: list[Path] | None, passphrase_files: list[Path] | None = None
) -> Credentials:
    return Credentials(
        recovery_key=recovery_key,
        shares=tuple(shares or ()),
        passphrase_files=tuple(passphrase_files or ()),
        prompt=terminal_prompt if sys.stdin.isatty() else None,
    )


CustodianPassphraseOption = Annotated[
    list[str] | None,
    typer.Option(
        "--custodian-passphrase",
        help="NAME=FILE: encrypt NAME's share with the passphrase in FILE (repeatable).",
    ),
]


def custodian_passphrases(specs: list[str] | None) -> dict[str, bytes]:
    """NAME=FILE pairs read into passphrases (files, so they never sit in argv)."""
    from lifeboat.crypto.unlock import read_passphrases
    from lifeboat.errors import ConfigError

    out: dict[str, bytes] = {}
    for spec in specs or ():
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--custodian-passphrase {spec!r}: expected NAME=FILE")
        (passphrase,) = read_passphrases([Path(path)])
        if len(passphrase) < 8:
            raise ConfigError(f"the passphrase for {name} is shorter than 8 characters")
        out[name] = passphrase
    return out
