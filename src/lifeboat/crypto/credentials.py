"""What a reading command brings to prove it may read: a recovery-key file or custodian shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Credentials:
    """How a reading command proves it may read: a recovery-key file or custodian shares."""

    recovery_key: Path | None = None
    shares: Sequence[Path] = ()
    passphrase_files: Sequence[Path] = ()
    # Set by the CLI on a terminal: asks for mnemonic words and passphrases (hidden input).
    prompt: Callable[[str, bool], str] | None = None

    @property
    def given(self) -> bool:
        """True when a key file or shares were passed (a prompt alone does not count)."""
        return self.recovery_key is not None or bool(self.shares)
