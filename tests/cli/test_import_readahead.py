"""A command lists the compiled modules it imported in the user's cache directory, and its
next run reads them ahead (lifeboat/cli/import_readahead.py). Real interpreters, real
files: what is listed, where, with which modes, and what is never listed or read."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
from pathlib import Path

from lifeboat.cli import import_readahead

MISSING_POLICY = ["-c", "/nonexistent/lifeboat.toml"]


def run_lifeboat(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter (no fork server: it has every module imported already)."""
    environment = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"} | {"HOME": str(home), **env}
    return subprocess.run(
        [sys.executable, "-m", "lifeboat", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )


def compiled(module_file: str) -> str:
    return importlib.util.cache_from_source(module_file)


def test_a_verb_lists_the_modules_it_imported_and_its_next_run_keeps_the_list(tmp_path: Path) -> None:
    import typer

    from lifeboat.cli import app

    first = run_lifeboat(tmp_path, *MISSING_POLICY, "check")
    listing = tmp_path / ".cache" / "lifeboat" / "imports" / "check"

    assert first.returncode != 0 and "Traceback" not in first.stderr  # the policy is missing
    lines = listing.read_text().splitlines()
    assert compiled(app.__file__) in lines and compiled(typer.__file__) in lines
    assert all(line.startswith("/") and line.endswith(".pyc") and Path(line).is_file() for line in lines)
    assert stat.S_IMODE(listing.stat().st_mode) == 0o600
    assert stat.S_IMODE(listing.parent.stat().st_mode) == 0o700

    listing.write_text("".join(line + "\n" for line in ["/nonexistent/gone.pyc", *lines]))
    before = listing.stat()
    again = run_lifeboat(tmp_path, *MISSING_POLICY, "check")

    assert (again.returncode, again.stderr) == (first.returncode, first.stderr)
    after = listing.stat()
    assert (after.st_ino, after.st_mtime_ns) == (
        before.st_ino,
        before.st_mtime_ns,
    )  # nothing new: not written


def test_a_typo_and_a_fast_command_list_nothing_and_xdg_cache_home_is_followed(tmp_path: Path) -> None:
    run_lifeboat(tmp_path, *MISSING_POLICY, "chek")
    run_lifeboat(tmp_path, *MISSING_POLICY, "wal", "push", str(tmp_path / "000000010000000000000001"))
    assert not (tmp_path / ".cache").exists()

    run_lifeboat(tmp_path, *MISSING_POLICY, "check", XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert (tmp_path / "xdg" / "lifeboat" / "imports" / "check").is_file()
    assert not (tmp_path / ".cache").exists()


def test_a_cache_directory_that_cannot_be_written_changes_nothing_the_user_sees(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    expected = run_lifeboat(tmp_path / "home", *MISSING_POLICY, "check")
    (tmp_path / "blocked").write_text("a file where the cache directory would be")

    run = run_lifeboat(tmp_path, *MISSING_POLICY, "check", XDG_CACHE_HOME=str(tmp_path / "blocked"))

    assert (run.returncode, run.stdout, run.stderr) == (expected.returncode, expected.stdout, expected.stderr)


def test_a_rewritten_list_names_only_compiled_modules_by_absolute_path(tmp_path: Path) -> None:
    """An insider's list: only absolute ``.pyc`` paths are taken (and only read ahead, never
    run); a pipe named like one neither blocks nor fails the command."""
    os.mkfifo(tmp_path / "pipe.pyc")
    listing = tmp_path / "list"
    listing.write_text(
        f"{tmp_path / 'pipe.pyc'}\n/etc/shadow\nrelative/mod.pyc\n/x/ok.pyc\n"
        + "".join(f"/x/m{i}.pyc\n" for i in range(import_readahead.MAX_PATHS + 10))
    )

    taken = import_readahead.listed(listing)

    assert (
        taken[:2] == [str(tmp_path / "pipe.pyc"), "/x/ok.pyc"]
        and len(taken) == import_readahead.MAX_PATHS - 2
    )
    cache = tmp_path / "cache" / "lifeboat" / "imports"
    cache.mkdir(parents=True)
    (cache / "check").write_text(listing.read_text())
    run = run_lifeboat(tmp_path, *MISSING_POLICY, "check", XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert run.returncode != 0 and "Traceback" not in run.stderr


def test_a_child_forked_from_a_command_never_lists_what_it_imported(tmp_path: Path) -> None:
    """A child forked to go on after the command (the WAL drainer) exits through the same
    exit handlers; its imports are not the command's."""
    script = (
        "import os, sys\n"
        "from lifeboat.cli import import_readahead\n"
        "import_readahead.start('check')\n"
        "if os.fork() == 0:\n"
        "    import xml.dom.minidom\n"
        "    sys.exit(0)\n"
        "os.wait()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"} | {"HOME": str(tmp_path)}
    for _ in range(2):  # the second time the command imports nothing new: it writes nothing
        subprocess.run([sys.executable, "-c", script], check=True, timeout=120, env=env)

    import xml.dom.minidom

    lines = (tmp_path / ".cache" / "lifeboat" / "imports" / "check").read_text().splitlines()
    assert compiled(import_readahead.__file__) in lines
    assert compiled(xml.dom.minidom.__file__) not in lines
