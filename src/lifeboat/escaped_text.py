"""Text a writer chose (a file name, a host, a child's error), made safe to show on a
terminal, and read back from a lifeboat child's standard error."""

from __future__ import annotations

import re


def shown(line: str) -> str:
    """The text with what it would have a terminal do escaped and every backslash doubled
    (a name that reads ``a\\x1b`` is then told from one that holds ESC): what every human
    listing prints of a name a writer chose (a file, a host)."""
    if line.isprintable() and "\\" not in line:
        return line
    return "".join(c if c.isprintable() and c != "\\" else _escaped(c) for c in line)


def _escaped(c: str) -> str:
    return c.encode("unicode_escape").decode("ascii")


# what _escaped writes of one character: shown() escapes every backslash, so each match is
# one (a pattern, not compiled here: every command imports this module, few read a child)
_ESCAPE = r"\\(\\|[tnr]|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})"


def unshown(line: str) -> str:
    """The text ``shown`` was given for ``line``: a child's error read back from its
    standard error is told again by the parent's own, which escapes it once more."""
    return re.sub(_ESCAPE, lambda m: m.group(0).encode("ascii").decode("unicode_escape"), line)


def child_error(stderr: str) -> str | None:
    """The last error a lifeboat child process printed (``print_error``), as it was raised;
    None when it printed none (it was killed, or failed before lifeboat started)."""
    prefix = "lifeboat: error: "
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    return unshown(lines[-1].removeprefix(prefix)) if lines else None
