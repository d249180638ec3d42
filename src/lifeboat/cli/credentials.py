"""Turning --recovery-key / --share options into credentials (files only, never argv secrets)."""

from __future__ import annotations

from pathlib import Path

from lifeboat.runtime import Credentials


def credentials_options(
    recovery_key: Path | None, shares: list[Path], passphrase_files: list[Path] | None = None
) -> Credentials:
    return Credentials(
        recovery_key=recovery_key,
        shares=tuple(shares),
        passphrase_files=tuple(passphrase_files or ()),
        interactive=False,
    )
