"""An insider with the state dir, or a user whose home root runs lifeboat with (``sudo -E``),
plants a record of dataclass methods whose code does something else as well
(lifeboat/cli/method_cache.py): in the state dir, in the cache directory the user owns,
in the working directory. The record is code, so lifeboat reads it from its own package's
``__pycache__`` alone, beside the ``.pyc`` files it already trusts; the planted ones never
run. The same record handed to ``install`` runs, so the plant is a real one."""

from __future__ import annotations

import marshal
import subprocess
import sys
from pathlib import Path

from lifeboat.cli import method_cache
from tests.cli.conftest import cli_for, write_policy


def planted_record(marker: Path) -> bytes:
    """The build's record of lifeboat's modules (made afresh in a fresh interpreter), each
    method's code made to touch ``marker`` as well as define the method."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from lifeboat.cli import method_cache\n"
            "method_cache.build(Path(sys.argv[1]))",
            str(marker.with_name("genuine.marshal")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    payload = method_cache._checked_payload(marker.with_name("genuine.marshal").read_bytes())
    assert payload is not None
    parts = marshal.loads(payload)
    touch = f"open({str(marker)!r}, 'a').close()\n"

    def poisoned(part: bytes) -> bytes:
        sources = marshal.loads(part)
        return marshal.dumps({s: compile(touch + s, "<string>", "exec", dont_inherit=True) for s in sources})

    evil = {module: poisoned(part) for module, part in parts.items()}
    return method_cache._sealed(marshal.dumps(evil))  # as the build seals it: only its place differs


def test_a_record_planted_outside_the_package_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran-planted-code"
    record = planted_record(marker)
    name = method_cache.cache_file().name
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("a")
    home = tmp_path / "home"
    cli = cli_for(write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}"), tmp_path, source)
    cli.env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    cli.cwd = tmp_path
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    state = tmp_path / ".lifeboat"
    for where in (state, state / "cache", home / ".cache" / "lifeboat", home / ".cache", tmp_path):
        where.mkdir(parents=True, exist_ok=True)
        (where / name).write_bytes(record)
        (where / "__pycache__").mkdir(exist_ok=True)
        (where / "__pycache__" / name).write_bytes(record)
    for args in (["backup"], ["status", "--json"], ["snapshots", "--json"], ["check"]):
        done = subprocess.run(
            [sys.executable, "-m", "lifeboat", "--config", str(cli.policy), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=cli.environment(),
            cwd=tmp_path,
        )
        assert done.returncode in (0, 1), done.stderr  # status: 1 when a target is breached
        assert not marker.exists(), f"`lifeboat {' '.join(args)}` ran a planted record"
    # the plant is potent: handed to install, its code runs
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from lifeboat.cli import method_cache\n"
            "assert method_cache.install(Path(sys.argv[1])) is not None\n"
            "import lifeboat.repo.model",
            str(tmp_path / name),
        ],
        check=True,
        timeout=120,
    )
    assert marker.exists()
