"""Human output is not squeezed into 80 columns when piped, fits a real terminal, and
honours NO_COLOR."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from tests.harness import LifeboatCli, PolicyBuilder

ASSET = "important-customer-database-in-the-primary-region"
CLASS = "important-customer-data"
DATA = "/srv/some/very/long/path/that/would/not/fit/on/one/line/of/eighty/columns/at/all/data"
COLOUR = re.compile(r"\x1b\[[0-9;]*(3[0-7]|9[0-7])m")

POLICY = (
    PolicyBuilder()
    .repository("file:///var/lib/lifeboat/repo", keyfile="backup.key")
    .data_class(CLASS, rpo="1d", rto="4h")
    .files(ASSET, [DATA], cls=CLASS, schedule="0 3 * * *", window="22:00-04:00")
    .text()
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR", "FORCE_COLOR")}
    return {**env, **extra}


def _check(policy: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return LifeboatCli(policy, env=_env(**env), timeout=60).run("policy", "check", "--offline", check=False)


@pytest.mark.parametrize("columns", [None, "80"])  # a COLUMNS leaked from a terminal does not count
def test_piped_output_keeps_every_value_whole_on_one_line(tmp_path, columns):
    policy = tmp_path / "lifeboat.toml"
    policy.write_text(POLICY)
    out = _check(policy, **({"COLUMNS": columns} if columns else {})).stdout
    row = next(line for line in out.splitlines() if ASSET in line)
    assert CLASS in row and "22:00-04:00" in row and "daily 7, weekly 4, monthly 12 (default)" in row
    assert "…" not in out
    # the warning naming the missing path is one line, the path unbroken
    assert any(DATA in line and line.startswith("warn:") for line in out.splitlines())


def test_a_terminal_gets_a_table_that_fits_its_width(tmp_path):
    policy = tmp_path / "lifeboat.toml"
    policy.write_text(POLICY)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    proc = LifeboatCli(policy, env=_env(TERM="xterm")).popen(
        "policy", "check", "--offline", stdout=slave, stderr=slave
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())
    table = [line for line in text.splitlines() if line[:1] in "┏┃┡│└"]
    assert len(table) >= 4
    assert max(len(line) for line in table) <= 80


def test_no_color_is_honoured_even_when_colour_is_forced(tmp_path):
    policy = tmp_path / "lifeboat.toml"
    policy.write_text(POLICY)
    assert COLOUR.search(_check(policy, FORCE_COLOR="1").stdout)  # the verdict is coloured...
    assert not COLOUR.search(_check(policy, FORCE_COLOR="1", NO_COLOR="1").stdout)  # ...unless NO_COLOR
