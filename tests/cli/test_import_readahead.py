"""A command lists the compiled modules it imported in the user's cache directory, and its
next run reads them ahead (lifeboat/cli/import_readahead.py). Real interpreters, real
files: what is listed, where, with which modes, and what is never listed, read or written
(tests/attacks/test_import_list_cache.py: a cache directory that is a link, or
somebody else's)."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

from lifeboat.cli import import_readahead

MISSING_POLICY = ["-c", "/nonexistent/lifeboat.toml"]


def environment(home: Path, **env: str) -> dict[str, str]:
    """The suite's environment with ``home`` as HOME, and its `.cache` made (root, as the
    suite runs, never makes one)."""
    (home / ".cache").mkdir(parents=True, exist_ok=True)
    return {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"} | {"HOME": str(home), **env}


def run_lifeboat(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter (not the fork server: it has every module imported already)."""
    return subprocess.run(
        [sys.executable, "-m", "lifeboat", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment(home, **env),
    )


def run_script(home: Path, body: str) -> subprocess.CompletedProcess[str]:
    """``body`` after ``import_readahead.start('check')``, in a fresh interpreter."""
    script = (
        "import os, sys\nfrom lifeboat.cli import import_readahead\nimport_readahead.start('check')\n" + body
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment(home),
        check=True,
    )


def compiled(module_file: str) -> str:
    return importlib.util.cache_from_source(module_file)


def listing(home: Path, verb: str = "check") -> Path:
    return home / ".cache" / "lifeboat" / "imports" / verb


def test_a_verb_lists_the_modules_it_imported_and_its_next_run_keeps_the_list(tmp_path: Path) -> None:
    import typer

    from lifeboat.cli import app

    first = run_lifeboat(tmp_path, *MISSING_POLICY, "check")

    assert first.returncode != 0 and "Traceback" not in first.stderr  # the policy is missing
    lines = listing(tmp_path).read_text().splitlines()
    assert compiled(app.__file__) in lines and compiled(typer.__file__) in lines
    assert all(line.startswith("/") and line.endswith(".pyc") and Path(line).is_file() for line in lines)
    assert stat.S_IMODE(listing(tmp_path).stat().st_mode) == 0o600
    assert stat.S_IMODE(listing(tmp_path).parent.stat().st_mode) == 0o700

    before = listing(tmp_path).stat()
    again = run_lifeboat(tmp_path, *MISSING_POLICY, "check")

    assert (again.returncode, again.stderr) == (first.returncode, first.stderr)
    after = listing(tmp_path).stat()
    assert (after.st_ino, after.st_mtime_ns) == (
        before.st_ino,
        before.st_mtime_ns,
    )  # nothing new: not written


def test_a_list_written_again_names_this_runs_modules_not_the_union_of_every_run(tmp_path: Path) -> None:
    """Restores of every kind of asset once had `restore`'s list name 1,045 modules: a run
    that imported other modules than the list names writes its own, nothing else."""
    import json.decoder
    import xml.dom.minidom

    run_script(tmp_path, "import json.decoder\n")
    assert compiled(json.decoder.__file__) in listing(tmp_path).read_text().splitlines()
    with listing(tmp_path).open("a") as f:
        f.write("/nonexistent/gone.pyc\n")

    run_script(tmp_path, "import xml.dom.minidom\n")

    lines = listing(tmp_path).read_text().splitlines()
    assert compiled(xml.dom.minidom.__file__) in lines and compiled(import_readahead.__file__) in lines
    assert compiled(json.decoder.__file__) not in lines and "/nonexistent/gone.pyc" not in lines


def test_a_typo_a_fast_command_and_a_forking_verb_list_nothing(tmp_path: Path) -> None:
    run_lifeboat(tmp_path, *MISSING_POLICY, "chek")
    run_lifeboat(tmp_path, *MISSING_POLICY, "wal", "push", str(tmp_path / "000000010000000000000001"))
    run_lifeboat(tmp_path, *MISSING_POLICY, "--debug", "status")  # typer's path; a fast `status` forks
    assert not (tmp_path / ".cache" / "lifeboat").exists()

    (tmp_path / "xdg").mkdir()
    run_lifeboat(tmp_path, *MISSING_POLICY, "check", XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert (tmp_path / "xdg" / "lifeboat" / "imports" / "check").is_file()
    run_lifeboat(tmp_path, *MISSING_POLICY, "check", XDG_CACHE_HOME="relative/cache")  # ignored, per XDG
    assert listing(tmp_path).is_file()


def test_each_asset_named_to_backup_or_restore_has_its_own_list(tmp_path: Path) -> None:
    """`backup keys` and `backup db` import different modules (a keys run a third of a
    PostgreSQL run's): each run of an asset reads ahead what that asset's kind imported,
    not what the other's run did last. A word that is not a plain name, or after a verb
    whose next word is free, makes no list of its own."""
    for args in (["backup", "keys"], ["backup", "db", "--json"], ["restore", "db"], ["policy", "check"]):
        run_lifeboat(tmp_path, *MISSING_POLICY, *args)
    run_lifeboat(tmp_path, *MISSING_POLICY, "backup", "--json", "media")
    run_lifeboat(tmp_path, *MISSING_POLICY, "backup", "../../escape")
    run_lifeboat(tmp_path, *MISSING_POLICY, "copy", "offsite")

    lists = sorted(p.name for p in listing(tmp_path).parent.iterdir())
    assert lists == ["backup", "backup.db", "backup.keys", "copy", "policy.check", "restore.db"]
    assert compiled(import_readahead.__file__) in listing(tmp_path, "backup.keys").read_text().splitlines()
    assert not (tmp_path / "escape").exists()


def test_a_cache_directory_that_cannot_be_written_changes_nothing_the_user_sees(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    expected = run_lifeboat(tmp_path / "home", *MISSING_POLICY, "check")
    (tmp_path / "blocked").write_text("a file where the cache directory would be")

    run = run_lifeboat(tmp_path, *MISSING_POLICY, "check", XDG_CACHE_HOME=str(tmp_path / "blocked"))

    assert (run.returncode, run.stdout, run.stderr) == (expected.returncode, expected.stdout, expected.stderr)


def test_a_rewritten_list_names_only_compiled_modules_and_a_pipe_never_blocks(tmp_path: Path) -> None:
    """Only absolute ``.pyc`` paths are taken from a list, and read ahead, never run; a pipe
    named like one is passed over at once (opened without waiting for a writer)."""
    os.mkfifo(tmp_path / "pipe.pyc")
    cache = tmp_path / "imports"
    cache.mkdir(mode=0o700)
    (cache / "check").write_text(
        f"{tmp_path / 'pipe.pyc'}\n/etc/shadow\nrelative/mod.pyc\n/x/ok.pyc\n"
        + "".join(f"/x/m{i}.pyc\n" for i in range(import_readahead.MAX_PATHS + 10))
    )
    dir_fd = os.open(cache, os.O_RDONLY | os.O_DIRECTORY)
    try:
        taken = import_readahead.listed(dir_fd, "check")
    finally:
        os.close(dir_fd)

    assert (
        taken[:2] == [str(tmp_path / "pipe.pyc"), "/x/ok.pyc"]
        and len(taken) == import_readahead.MAX_PATHS - 2
    )
    reader = threading.Thread(
        target=import_readahead.advise, args=([str(tmp_path / "pipe.pyc")],), daemon=True
    )
    reader.start()
    reader.join(timeout=60)  # returns at once unless the open waits for a writer
    assert not reader.is_alive()


def test_a_child_forked_from_a_command_never_lists_what_it_imported(tmp_path: Path) -> None:
    """A child forked to go on after the command (the WAL drainer) exits through the same
    exit handlers; its imports are not the command's."""
    body = "if os.fork() == 0:\n    import xml.dom.minidom\n    sys.exit(0)\nos.wait()\n"
    run_script(tmp_path, body)
    before = listing(tmp_path).stat()

    run_script(tmp_path, body)  # the command imports nothing new: the list stays as it is

    import xml.dom.minidom

    lines = listing(tmp_path).read_text().splitlines()
    assert compiled(import_readahead.__file__) in lines
    assert compiled(xml.dom.minidom.__file__) not in lines
    after = listing(tmp_path).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_module_path_that_is_not_utf8_is_listed_without_an_error_at_exit(tmp_path: Path) -> None:
    odd = os.fsdecode(bytes(tmp_path) + b"/mods-\xff")
    os.mkdir(odd)
    Path(odd, "odd_module.py").write_text("VALUE = 1\n")

    run = run_script(tmp_path, f"sys.path.insert(0, {odd!r})\nimport odd_module\n")

    assert run.stderr == ""  # no "Exception ignored in atexit callback"
    lines = listing(tmp_path).read_bytes().splitlines()
    assert os.fsencode(compiled(os.path.join(odd, "odd_module.py"))) in lines
    assert [p.name for p in listing(tmp_path).parent.iterdir()] == ["check"]  # no temporary file left
