"""One error root for everything a user can cause or fix.

Every error carries a one-line message (lowercase, no trailing period, never a secret),
an optional hint telling the user what to do, and the process exit code the CLI uses.
Library code raises these; only ``cli/`` turns them into output and exit codes.
"""

from __future__ import annotations

from collections.abc import Iterable

EXIT_OK = 0
EXIT_FAILED = 1  # a check failed, a target was breached, data is damaged
EXIT_USAGE = 2  # bad input: usage, configuration, credentials, missing keys


class LifeboatError(Exception):
    """Root of every error lifeboat reports to a user."""

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class ConfigError(LifeboatError):
    """The policy file or a command-line option is invalid."""

    @classmethod
    def unknown_asset(cls, name: str, known: Iterable[str]) -> ConfigError:
        return cls(f"unknown asset {name!r} (known: {', '.join(sorted(known)) or 'none'})")


class KeyError_(LifeboatError):
    """A key, share or passphrase is missing, wrong or belongs to another repository."""


class StorageError(LifeboatError):
    """The storage backend failed: unreachable, permission denied, disk full."""

    transient: bool = False  # worth retrying (5xx, dropped connection)


class NotFoundError(StorageError):
    """An object, snapshot or file that was asked for does not exist."""


class SourceChanged(NotFoundError):
    """A source file deleted or replaced (by a link, a pipe, a directory) since the walk
    saw it: left out of the snapshot, as if the walk had come a moment later."""


class AlreadyExistsError(StorageError):
    """A put-if-absent found the name taken (never overwrite)."""


class LockedError(StorageError):
    """An object is protected by Object Lock / read-only retention and cannot be deleted."""


class RepoLockedError(LifeboatError):
    """Another process holds a conflicting repository lock."""


class IntegrityError(LifeboatError):
    """Stored data failed authentication or hashing: it was tampered with or corrupted."""

    exit_code = EXIT_FAILED


class CheckFailed(LifeboatError):
    """A verification, drill or target check failed."""

    exit_code = EXIT_FAILED


class RestoreError(LifeboatError):
    """A restore cannot proceed (target not empty, missing WAL, recovery failed)."""
