"""`wal push` and `wal fetch` run once per WAL segment (archive_command, restore_command):
their start-up bounds how fast PostgreSQL can archive and replay; monitoring polls `status`
and scripts list `snapshots`. None of the four may load what it does not use (issue #18).
The import set is asserted, not the time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.harness import LifeboatCli, PolicyBuilder
from tests.harness.cli import assert_no_crash

# typer's rich help, the S3 driver, the PostgreSQL driver, the restore machinery: none is
# needed to push a segment into a file:// repository or to fetch it back
NOT_FOR_WAL = ["typer", "rich.console", "rich.progress", "boto3", "botocore", "psycopg"]
# nor pydantic's plug-in discovery (importlib.metadata reads every installed distribution)
NOT_FOR_WAL += ["lifeboat.repo.reader", "importlib.metadata"]
# numpy (~100 ms) checks the pages of a base backup, nothing else
NOT_FOR_WAL += ["numpy"]
# nor subprocess and shutil (the walk's `du`, and their bz2, lzma and locale): ~4 ms a push
NOT_FOR_WAL += ["subprocess", "shutil"]
# nor key serialization (its SSH, EC and DSA modules): keys are raw bytes here, ~3 ms
NOT_FOR_WAL += ["cryptography.hazmat.primitives.serialization"]
# nor what `status` keeps of the policy (~2 ms)
NOT_FOR_WAL += ["lifeboat.ops.status_view"]
UNUSED_KINDS = ["lifeboat.assets.objects", "lifeboat.assets.files", "lifeboat.assets.keys"]
# a human listing draws its table with rich; nothing else of typer's world is needed, nor
# the repository's backup machinery (nor, for `snapshots`, its restore machinery: `status`
# loads the files kind, whose package names the reader's RestoreStats)
NOT_FOR_LISTINGS = ["typer", "click", "rich.progress", "rich.traceback", "boto3", "botocore", "psycopg"]
NOT_FOR_LISTINGS += ["lifeboat.repo.backup", "importlib.metadata"]
# certificates are parsed only when a keys asset is fingerprinted (~30 ms to import)
NOT_FOR_LISTINGS += ["cryptography.x509", "numpy"]
UNUSED_BY_FILES = ["lifeboat.assets.objects", "lifeboat.assets.postgres", "lifeboat.assets.keys"]

# runs the real entry point and, as the process exits, writes what it imported and whether
# the policy models of asset kinds this policy does not use were loaded
PROBE = """
import atexit, json, sys
OUT = sys.argv[1]
def built(name):
    # wherever the kind's model lives (policy.py, or its kind's package); a model whose
    # module never loaded was not built either
    for module_name, module in list(sys.modules.items()):
        model = getattr(module, name, None) if module_name.startswith("lifeboat") else None
        if isinstance(model, type):
            return model.__pydantic_complete__
    return False
def dump():
    modules = sorted(sys.modules)  # before built(): its getattr may load a lazy name
    built_ = {n: built(n) for n in ("ObjectsAsset", "KeysAsset")}
    with open(OUT, "w") as fh:
        json.dump({"modules": modules, "built": built_}, fh)
atexit.register(dump)
sys.argv = ["lifeboat", *sys.argv[2:]]
from lifeboat.cli.entry import main
main()
"""


# the typer app itself, as `lifeboat` ran every command before the fast paths
TYPER_APP = [sys.executable, "-c", "import sys; from lifeboat.cli.app import main; main(sys.argv[1:])"]


def _run_probed(tmp_path: Path, policy: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "probe.json"
    cmd = [sys.executable, "-c", PROBE, str(out), "--config", str(policy), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ})
    assert_no_crash(proc)
    return proc, json.loads(out.read_text())


def _assert_lean(seen: dict, unwanted: list[str] = NOT_FOR_WAL + UNUSED_KINDS) -> None:
    modules = set(seen["modules"])
    loaded = [m for m in unwanted if m in modules]
    assert loaded == [], f"imported for a fast command: {loaded}"
    assert seen["built"] == {"ObjectsAsset": False, "KeysAsset": False}
    unused_models = [
        m for m in ("lifeboat.assets.objects.model", "lifeboat.assets.keys.model") if m in modules
    ]
    assert unused_models == [], f"models of unused kinds imported: {unused_models}"


def _initialised(tmp_path: Path, *, mixed: bool = False) -> Path:
    """A file:// repository with one PostgreSQL asset (no server: push and fetch need none),
    and, ``mixed``, files and keys assets beside it."""
    builder = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .state(tmp_path / "state")
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 2})
        .postgres("db", dsn="host=/nonexistent dbname=postgres")
    )
    if mixed:
        builder.files("docs", [tmp_path])  # (a keys asset would need escrow custodians at init)
    policy = builder.write(tmp_path / "lifeboat.toml")
    LifeboatCli(policy=policy, cwd=tmp_path).run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    return policy


def test_wal_push_and_fetch_import_only_what_they_use(tmp_path: Path) -> None:
    policy = _initialised(tmp_path)
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(os.urandom(64 * 1024))

    push, seen = _run_probed(tmp_path, policy, "wal", "push", str(segment))
    assert push.returncode == 0, push.stderr
    _assert_lean(seen)

    restored = tmp_path / "restored"
    key = str(tmp_path / "recovery.key")
    fetch, seen = _run_probed(
        tmp_path, policy, "wal", "fetch", segment.name, str(restored), "--recovery-key", key
    )
    assert fetch.returncode == 0, fetch.stderr
    assert restored.read_bytes() == segment.read_bytes()  # the push archived it
    _assert_lean(seen)


def test_wal_push_into_an_s3_repository_loads_botocore_but_not_the_aws_runtime(
    tmp_path: Path, s3_server: str, make_bucket: Any
) -> None:
    """botocore imports the AWS Common Runtime (~45 ms) only to see whether it is there; the
    fast commands never use it (it fetches a bucket's objects in a backup)."""
    policy = (
        PolicyBuilder()
        .s3_repository(s3_server, make_bucket(object_lock=False))
        .state(tmp_path / "state")
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 2})
        .postgres("db", dsn="host=/nonexistent dbname=postgres")
        .write(tmp_path / "lifeboat.toml")
    )
    LifeboatCli(policy=policy, cwd=tmp_path).run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(os.urandom(64 * 1024))

    push, seen = _run_probed(tmp_path, policy, "wal", "push", str(segment))

    assert push.returncode == 0, push.stderr
    assert "botocore" in seen["modules"]
    # "awscrt" itself is listed: the marker that hides it
    assert not [m for m in seen["modules"] if m == "_awscrt" or m.startswith("awscrt.")]


def test_wal_push_as_archive_command_runs_it_loads_no_other_kind(tmp_path: Path) -> None:
    """archive_command names its asset (`--asset db`): the files and keys assets of the same
    policy cost the push nothing."""
    policy = _initialised(tmp_path, mixed=True)
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(os.urandom(64 * 1024))
    push, seen = _run_probed(tmp_path, policy, "wal", "push", "--asset", "db", str(segment))
    assert push.returncode == 0, push.stderr
    # the policy validates its files asset with the files package's model; the package's
    # plug-in and its tree code (which loads the whole repository) are not imported
    mixed = [m for m in UNUSED_KINDS if m != "lifeboat.assets.files"]
    mixed += ["lifeboat.assets.files.plugin", "lifeboat.assets.files.tree"]
    _assert_lean(seen, NOT_FOR_WAL + mixed)
    restored, key = tmp_path / "restored", str(tmp_path / "recovery.key")
    args = ("wal", "fetch", segment.name, str(restored), "--asset", "db", "--recovery-key", key)
    fetch, seen = _run_probed(tmp_path, policy, *args)
    assert fetch.returncode == 0, fetch.stderr
    assert restored.read_bytes() == segment.read_bytes()
    _assert_lean(seen, NOT_FOR_WAL + mixed)
    wrong, _ = _run_probed(tmp_path, policy, "wal", "push", "--asset", "docs", str(segment))
    assert wrong.returncode == 2
    assert wrong.stderr == "lifeboat: error: 'docs' is not a postgres asset (postgres assets: db)\n"


def test_a_push_under_a_policy_validated_before_imports_no_pydantic(tmp_path: Path) -> None:
    """The first push validates the policy and keeps what a push needs, sealed in the state
    dir (cli/policy_slice.py); the next ones under the same file skip pydantic altogether."""
    policy = _initialised(tmp_path, mixed=True)
    segments = [tmp_path / f"00000001000000000000000{i}" for i in (1, 2)]
    for segment in segments:
        segment.write_bytes(os.urandom(64 * 1024))
    first, seen = _run_probed(tmp_path, policy, "wal", "push", "--asset", "db", str(segments[0]))
    assert first.returncode == 0, first.stderr
    assert "pydantic" in seen["modules"]  # the first one validated the policy
    second, seen = _run_probed(tmp_path, policy, "wal", "push", "--asset", "db", str(segments[1]))
    assert second.returncode == 0, second.stderr
    validation = ["pydantic", "pydantic_core", "lifeboat.policy", "lifeboat.policy_file"]
    _assert_lean(seen, NOT_FOR_WAL + UNUSED_KINDS + validation + ["lifeboat.assets.registry"])
    key = str(tmp_path / "recovery.key")
    for segment in segments:  # both archived, where the policy says; fetched from the same slice
        restored = tmp_path / f"restored-{segment.name}"
        args = ("wal", "fetch", segment.name, str(restored), "--asset", "db", "--recovery-key", key)
        fetch, seen = _run_probed(tmp_path, policy, *args)
        assert fetch.returncode == 0, fetch.stderr
        assert restored.read_bytes() == segment.read_bytes()
        _assert_lean(seen, NOT_FOR_WAL + UNUSED_KINDS + validation + ["lifeboat.assets.registry"])


def test_a_push_after_the_policy_was_edited_follows_the_edit(tmp_path: Path) -> None:
    """The kept settings are those of the file's exact bytes: renaming the asset takes effect
    on the next push, which refuses the old name and archives under the new one."""
    policy = _initialised(tmp_path)
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(os.urandom(64 * 1024))
    cli = LifeboatCli(policy=policy, cwd=tmp_path)
    cli.run("wal", "push", "--asset", "db", str(segment))
    policy.write_text(policy.read_text().replace("[assets.db]", "[assets.maindb]"))

    old_name = cli.run("wal", "push", "--asset", "db", str(segment), check=False)
    assert old_name.returncode == 2
    assert "'db' is not a postgres asset (postgres assets: maindb)" in old_name.stderr
    cli.run("wal", "push", str(segment))  # the only postgres asset: now maindb
    restored, key = tmp_path / "restored", str(tmp_path / "recovery.key")
    cli.run("wal", "fetch", segment.name, str(restored), "--asset", "maindb", "--recovery-key", key)
    assert restored.read_bytes() == segment.read_bytes()


def test_a_push_follows_a_repository_symlink_moved_since(tmp_path: Path) -> None:
    """A relative repository path is resolved through the filesystem on every push, cached
    settings or not: moving the symlink it goes through (a storage migration) moves the
    next push with it, as a full validation of the same file would."""
    (tmp_path / "repo-a").mkdir()
    (tmp_path / "repo").symlink_to(tmp_path / "repo-a")
    policy = (
        PolicyBuilder()
        .repository("repo")
        .state(tmp_path / "state")
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 2})
        .postgres("db", dsn="host=/nonexistent dbname=postgres")
        .write(tmp_path / "lifeboat.toml")
    )
    cli = LifeboatCli(policy=policy, cwd=tmp_path)
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    first, second = (tmp_path / f"00000001000000000000000{i}" for i in (1, 2))
    for segment in (first, second):
        segment.write_bytes(os.urandom(64 * 1024))
    cli.run("wal", "push", "--asset", "db", str(first))  # validates and keeps the settings
    shutil.copytree(tmp_path / "repo-a", tmp_path / "repo-b")
    (tmp_path / "repo").unlink()
    (tmp_path / "repo").symlink_to(tmp_path / "repo-b")
    cli.run("wal", "push", "--asset", "db", str(second))

    def fetched_through(target: str) -> bool:
        (tmp_path / "repo").unlink()
        (tmp_path / "repo").symlink_to(tmp_path / target)
        dest = tmp_path / f"fetched-from-{target}"
        args = ("wal", "fetch", second.name, str(dest), "--asset", "db")
        proc = cli.run(*args, "--recovery-key", str(tmp_path / "recovery.key"), check=False)
        assert proc.returncode in (0, 1), proc.stderr
        return proc.returncode == 0 and dest.read_bytes() == second.read_bytes()

    assert not fetched_through("repo-a")  # the old target never saw it
    assert fetched_through("repo-b")


def test_wal_fetch_of_a_missing_segment_exits_1_quietly_on_the_fast_path(tmp_path: Path) -> None:
    """restore_command's contract: 1 and no noise when the archive lacks the segment."""
    policy = _initialised(tmp_path)
    key = str(tmp_path / "recovery.key")
    args = ("wal", "fetch", "000000010000000000000009", str(tmp_path / "x"), "--recovery-key", key)
    proc, seen = _run_probed(tmp_path, policy, *args)
    assert (proc.returncode, proc.stderr) == (1, "")
    assert not (tmp_path / "x").exists()
    _assert_lean(seen)


def _pushed_segment(tmp_path: Path) -> tuple[LifeboatCli, Path]:
    """The CLI on a fresh repository (``_initialised``) and a segment it archived."""
    cli = LifeboatCli(policy=_initialised(tmp_path), cwd=tmp_path)
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(os.urandom(64 * 1024))
    cli.run("wal", "push", "--asset", "db", str(segment))
    return cli, segment


def _packs(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()]


def test_wal_fetch_that_cannot_read_an_archived_segment_stops_recovery(tmp_path: Path) -> None:
    """restore_command's other half: PostgreSQL takes any exit up to 125 for the end of the
    archive, so an archive recovery would promote early at a segment whose pack was pruned
    or whose store was unreachable. Such a fetch exits 200 (PostgreSQL stops with FATAL),
    with one line saying why, on the fast path and through typer alike."""
    cli, segment = _pushed_segment(tmp_path)
    for pack in _packs(tmp_path):
        pack.unlink()
    key = str(tmp_path / "recovery.key")
    for through_typer in ((), ("--",)):  # "--" is no fast-path argument: typer parses the call
        dest = tmp_path / f"fetched{len(through_typer)}"
        args = ("wal", "fetch", "--recovery-key", key, *through_typer, segment.name, str(dest))
        proc = cli.run(*args, check=False)
        assert proc.returncode == 200, proc.stderr
        assert proc.stderr.startswith("lifeboat: error: ") and "does not exist" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 2 and not dest.exists()
    missing = ("wal", "fetch", "000000010000000000000002", str(tmp_path / "x"), "--recovery-key", key)
    assert cli.run(*missing, check=False).returncode == 1  # the end of the archive stays 1
    # a standby (standby.signal where restore_command runs: the data directory) retries and
    # streams meanwhile: 1 there, not a FATAL stop for a store's brief outage
    standby = tmp_path / "standby-data"
    standby.mkdir()
    (standby / "standby.signal").touch()
    at_standby = LifeboatCli(policy=cli.policy, cwd=standby)
    args = ("wal", "fetch", segment.name, str(standby / "x"), "--recovery-key", key)
    fetched = at_standby.run(*args, check=False)
    assert fetched.returncode == 1 and "lifeboat: error:" in fetched.stderr


def test_wal_fetch_of_a_damaged_segment_stops_recovery(tmp_path: Path) -> None:
    """A pack that fails its authentication (IntegrityError, whose own exit is 1): 200 too."""
    cli, segment = _pushed_segment(tmp_path)
    for pack in _packs(tmp_path):
        data = bytearray(pack.read_bytes())
        data[len(data) // 2] ^= 0xFF
        os.chmod(pack, 0o644)
        pack.write_bytes(bytes(data))
    dest = tmp_path / "fetched"
    key = str(tmp_path / "recovery.key")
    proc = cli.run("wal", "fetch", segment.name, str(dest), "--recovery-key", key, check=False)
    assert proc.returncode == 200 and proc.stderr.startswith("lifeboat: error: "), proc.stderr
    assert not dest.exists()


def test_wal_push_errors_are_one_line_with_the_same_exit_code(tmp_path: Path) -> None:
    """The fast path prints errors as the typer path does: `lifeboat: error:` and exit 2."""
    policy = _initialised(tmp_path)
    proc, seen = _run_probed(tmp_path, policy, "wal", "push", "--asset", "nope", str(tmp_path / "x"))
    assert proc.returncode == 2
    assert proc.stderr == "lifeboat: error: 'nope' is not a postgres asset (postgres assets: db)\n"
    assert "typer" not in seen["modules"]
    # anything the fast path does not know goes to typer: its usage error, its exit code
    typo = LifeboatCli(policy=policy).run("wal", "push", "--asnyc", str(tmp_path / "x"), check=False)
    assert typo.returncode == 2
    assert typo.stderr.startswith("lifeboat: error: no such option: --asnyc")


def _backed_up(tmp_path: Path) -> Path:
    """A file:// repository holding two snapshots of a files asset."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"f{i}.txt").write_text(f"file {i}\n" * (i + 1))
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .state(tmp_path / "state")
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 2})
        .files("docs", [data])
        .write(tmp_path / "lifeboat.toml")
    )
    cli = LifeboatCli(policy=policy, cwd=tmp_path)
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    cli.run("backup", "docs")
    (data / "f0.txt").write_text("changed\n")
    cli.run("backup", "docs")
    return policy


def test_status_and_snapshots_import_only_what_they_use(tmp_path: Path) -> None:
    policy = _backed_up(tmp_path)
    for args in (["status", "--json"], ["snapshots", "--json"], ["snapshots", "--asset", "docs", "--json"]):
        proc, seen = _run_probed(tmp_path, policy, *args)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)  # it did list something
        listing = ["lifeboat.repo.reader"] if args[0] == "snapshots" else []
        _assert_lean(seen, NOT_FOR_LISTINGS + UNUSED_BY_FILES + listing + ["rich"])  # JSON: no console
    for args in (["status"], ["snapshots"]):
        proc, seen = _run_probed(tmp_path, policy, *args)
        assert proc.returncode == 0, proc.stderr
        assert "docs" in proc.stdout
        listing = ["lifeboat.repo.reader"] if args[0] == "snapshots" else []
        _assert_lean(seen, NOT_FOR_LISTINGS + UNUSED_BY_FILES + listing)
    # the first `snapshots` and `status` validated the policy and kept their slices: the next
    # ones need none
    validation = ["pydantic", "pydantic_core", "lifeboat.policy", "lifeboat.policy_file"]
    validation += ["lifeboat.assets.files.model"]
    for args in (["snapshots", "--json"], ["snapshots", "--asset", "docs", "--json"]):
        proc, seen = _run_probed(tmp_path, policy, *args)
        assert proc.returncode == 0, proc.stderr
        assert {s["asset"] for s in json.loads(proc.stdout)} == {"docs"}
        _assert_lean(seen, NOT_FOR_LISTINGS + UNUSED_BY_FILES + validation + ["lifeboat.repo.reader"])
    proc, seen = _run_probed(tmp_path, policy, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [a["asset"] for a in json.loads(proc.stdout)["assets"]] == ["docs"]
    _assert_lean(seen, NOT_FOR_LISTINGS + UNUSED_BY_FILES + validation + ["rich"])
    unknown, _ = _run_probed(tmp_path, policy, "snapshots", "--asset", "doc", "--json")
    assert (unknown.returncode, unknown.stderr) == (2, "lifeboat: error: unknown asset 'doc' (known: docs)\n")


def test_status_asks_a_postgres_server_from_a_child_that_imports_the_driver(tmp_path: Path) -> None:
    """The archiver probe's driver (psycopg, ~80 ms) is imported by a child process while
    status reads its policy and repository: under a kept slice the status process itself
    never loads it, and the probe's verdict still reaches the output (here: no server, so
    no answer). The first run validates the policy, and reads the dsn's host with
    psycopg's own parser."""
    policy = _initialised(tmp_path, mixed=True)
    for _ in ("validates", "kept"):
        proc, seen = _run_probed(tmp_path, policy, "status", "--json")
        assert proc.returncode == 1, proc.stderr  # never backed up
        by_name = {a["asset"]: a for a in json.loads(proc.stdout)["assets"]}
        assert by_name["db"]["archiver_answered"] is False  # asked, and nobody answered
        assert by_name["docs"]["archiver_answered"] is None  # a files asset has no archiver
    driver = ["psycopg", "lifeboat.assets.postgres.configure", "pydantic"]
    assert [m for m in driver if m in seen["modules"]] == []


def test_status_probe_child_under_odd_parents_and_a_broken_driver(tmp_path: Path) -> None:
    """The child that asks the server: a policy read from a pipe is read once (by the
    validation); a caller that ignores SIGCHLD (the child is then reaped for it) gets no
    noise on stderr; a driver that does not import says so in one line (it gave no answer,
    as if the server were down, and in-process it was an internal error)."""
    policy = _initialised(tmp_path, mixed=True)
    lifeboat = str(Path(sys.executable).with_name("lifeboat"))
    piped = subprocess.run(
        [lifeboat, "--config", "/dev/stdin", "status", "--json"],
        input=policy.read_text().replace('"keys/', f'"{tmp_path}/keys/'),  # not under /dev
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert piped.returncode == 1, piped.stderr  # never backed up
    assert {a["asset"] for a in json.loads(piped.stdout)["assets"]} == {"db", "docs"}

    ignoring = "import os, signal, sys; signal.signal(signal.SIGCHLD, signal.SIG_IGN); "
    ignoring += "os.execv(sys.argv[1], sys.argv[1:])"
    run = [sys.executable, "-c", ignoring, lifeboat, "--config", str(policy), "status", "--json"]
    for _ in range(2):  # validated, then under the kept slice
        proc = subprocess.run(run, capture_output=True, text=True, timeout=120)
        assert (proc.returncode, proc.stderr) == (1, "")
        by_name = {a["asset"]: a for a in json.loads(proc.stdout)["assets"]}
        assert by_name["db"]["archiver_answered"] is False

    broken = tmp_path / "broken" / "psycopg"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("libpq library not found")\n')
    env = {**os.environ, "PYTHONPATH": str(broken.parent)}
    proc = subprocess.run(run[3:], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr  # not "no answer", nor a crash
    assert proc.stderr == (
        "lifeboat: error: a status probe's driver does not load (lifeboat.assets.postgres.configure): "
        "libpq library not found\nhint: the installation is broken: reinstall lifeboat\n"
    )


def test_two_policies_sharing_a_state_dir_each_keep_their_slice(tmp_path: Path) -> None:
    """A monitoring host polling `status` under two policy files with one state dir: each
    keeps its own validated slice (they took turns in one slot, and every poll validated
    its policy again)."""
    policy = _backed_up(tmp_path)
    other = tmp_path / "other.toml"
    other.write_text(policy.read_text().replace('rpo = "1d"', 'rpo = "2d"'))
    for config in (policy, other):
        _run_probed(tmp_path, config, "status", "--json")  # validated, and kept
    for config, rpo in ((policy, 86400.0), (other, 172800.0)):
        proc, seen = _run_probed(tmp_path, config, "status", "--json")
        assert proc.returncode == 0, proc.stderr
        assert [a["rpo_s"] for a in json.loads(proc.stdout)["assets"]] == [rpo]  # its own policy's
        assert "pydantic" not in seen["modules"]  # its kept slice, not a validation


def test_status_under_a_policy_validated_before_follows_an_edit_of_it(tmp_path: Path) -> None:
    """`status` keeps what it reads of the policy (targets, assets, drills) with the
    slice; an edited policy file is validated again, and its new targets judged (the
    harness's clock stands still: the exposure stays below even the new RPO)."""
    policy = _backed_up(tmp_path)
    cli = LifeboatCli(policy=policy, cwd=tmp_path)
    first = json.loads(cli.run("status", "--json").stdout)
    assert [(a["asset"], a["rpo_s"], a["breaches"]) for a in first["assets"]] == [("docs", 86400.0, [])]
    assert json.loads(cli.run("status", "--json").stdout)["assets"][0]["rpo_s"] == 86400.0  # kept slice
    policy.write_text(policy.read_text().replace('rpo = "1d"', 'rpo = "1s"'))
    [docs] = json.loads(cli.run("status", "--json", check=False).stdout)["assets"]
    assert docs["rpo_s"] == 1.0 and docs["risk"] == round(docs["exposure_s"] / 1.0, 4)


def test_status_under_a_policy_validated_before_reads_a_moved_evidence_symlink(tmp_path: Path) -> None:
    """A drill's evidence directory reached through a symlink: the slice keeps it resolved,
    and is not used once the symlink points elsewhere (the unsigned bundle found there is
    refused and named, as under a policy validated again)."""
    policy = _backed_up(tmp_path)
    (tmp_path / "ev1").mkdir()
    failed = tmp_path / "ev2" / "2026-12-01-weekly"
    failed.mkdir(parents=True)
    drill = {"drill": "weekly", "started": "2026-12-01T00:00:00+00:00", "verdict": "fail"}
    (failed / "drill.json").write_text(json.dumps(drill | {"achieved": {"docs": {"rto_s": 60.0}}}))
    (tmp_path / "evidence").symlink_to(tmp_path / "ev1")
    with policy.open("a") as fh:
        fh.write('\n[drills.weekly]\nscenario = "full-outage"\nevidence_dir = "evidence"\n')
    with policy.open("a") as fh:  # and one at the default place, beside the policy file
        fh.write('\n[drills.monthly]\nscenario = "full-outage"\n')
    cli = LifeboatCli(policy=policy, cwd=tmp_path)
    [docs] = json.loads(cli.run("status", "--json").stdout)["assets"]  # validated, and kept
    assert docs["last_drill"] is None
    kept, seen = _run_probed(tmp_path, policy, "status", "--json")
    assert kept.returncode == 0 and json.loads(kept.stdout)["assets"][0]["last_drill"] is None
    assert "pydantic" not in seen["modules"]  # from the slice
    (tmp_path / "evidence").unlink()
    (tmp_path / "evidence").symlink_to(tmp_path / "ev2")
    moved = cli.run("status", "--json", check=False)
    [docs] = json.loads(moved.stdout)["assets"]
    assert (moved.returncode, docs["last_drill_verdict"]) == (1, None)
    assert f"drill evidence {failed} refused: SHA256SUMS is missing" in docs["breaches"]


def test_a_kept_push_does_not_look_at_the_drills_evidence(tmp_path: Path) -> None:
    """Only `status` reads the drills' evidence directories: a push under a kept slice
    goes on whatever has become of them (here a symlink loop, which resolving would fail)."""
    policy = _initialised(tmp_path)
    with policy.open("a") as fh:
        fh.write('\n[drills.weekly]\nscenario = "pg-pitr"\nassets = ["db"]\nevidence_dir = "ev/sub"\n')
    segments = [tmp_path / f"00000001000000000000000{i}" for i in (1, 2)]
    for segment in segments:
        segment.write_bytes(os.urandom(64 * 1024))
    cli = LifeboatCli(policy=policy, cwd=tmp_path)
    cli.run("wal", "push", "--asset", "db", str(segments[0]))  # validated, and kept
    (tmp_path / "ev").symlink_to(tmp_path / "ev")  # a loop
    pushed, seen = _run_probed(tmp_path, policy, "wal", "push", "--asset", "db", str(segments[1]))
    assert pushed.returncode == 0, pushed.stderr
    assert "pydantic" not in seen["modules"]  # from the slice
    key = str(tmp_path / "recovery.key")
    cli.run("wal", "fetch", segments[1].name, str(tmp_path / "back"), "--asset", "db", "--recovery-key", key)
    assert (tmp_path / "back").read_bytes() == segments[1].read_bytes()


def test_status_and_snapshots_print_the_bytes_their_typer_commands_print(tmp_path: Path) -> None:
    """The typer app run directly and the executable's fast path print and exit alike. The
    policy's one asset has no backup yet (its exposure, which changes by the second between
    two runs, is '-'): status breaches (exit 1) and the repository's snapshots of `docs`,
    an asset no longer in the policy, are still listed."""
    _backed_up(tmp_path)
    (tmp_path / "fresh").mkdir()
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .state(tmp_path / "state")
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 2})
        .files("fresh", [tmp_path / "fresh"])
        .write(tmp_path / "fresh.toml")
    )
    cli = LifeboatCli(policy=policy, cwd=tmp_path)
    lines = [
        (["status"], 1),
        (["status", "--json"], 1),
        (["snapshots"], 0),
        (["snapshots", "--json"], 0),
        (["snapshots", "--asset=docs", "--json"], 0),
        (["snapshots", "--asset", "nope"], 2),
    ]
    for args, code in lines:
        fast = cli.run(*args, check=False)
        typer = cli.shell([*TYPER_APP, "--config", str(policy), *args], check=False)
        assert (fast.returncode, fast.stdout, fast.stderr) == (typer.returncode, typer.stdout, typer.stderr)
        assert fast.returncode == code, (args, fast.stderr)
    listed = json.loads(cli.run("snapshots", "--json").stdout)
    assert [s["asset"] for s in listed] == ["docs", "docs"]
    status = json.loads(cli.run("status", "--json", check=False).stdout)
    assert [(a["asset"], a["breaches"]) for a in status["assets"]] == [("fresh", ["never backed up"])]


def test_what_the_fast_path_does_not_handle_goes_to_typer(tmp_path: Path) -> None:
    policy = _backed_up(tmp_path)
    cli = LifeboatCli(policy=policy, cwd=tmp_path)
    help_ = cli.run("status", "--help")
    assert "Usage: lifeboat status" in help_.stdout and "--json" in help_.stdout
    typo = cli.run("snapshots", "--jsno", check=False)
    assert typo.returncode == 2
    assert typo.stderr.startswith("lifeboat: error: no such option: --jsno")
    extra = cli.run("status", "now", check=False)
    assert extra.returncode == 2
    assert extra.stderr.startswith("lifeboat: error: got unexpected extra argument(s) (now)")


def test_the_repository_package_names_load_on_first_use() -> None:
    """`lifeboat.repo` exports its names lazily: each must resolve to its home's object."""
    import importlib

    import lifeboat.repo as repo

    assert sorted(repo.__all__) == sorted(repo._HOMES)
    for name, home in repo._HOMES.items():
        module = importlib.import_module(f"lifeboat.repo.{home}")
        assert getattr(repo, name) is getattr(module, name)


def _callback_modules(group: Any) -> set[str]:
    """The modules whose functions a typer app's commands (and sub-apps') run."""
    found = {c.callback.__module__ for c in group.registered_commands if c.callback is not None}
    for sub in group.registered_groups:
        found |= _callback_modules(sub.typer_instance)
    return found


def test_each_verb_is_registered_by_the_modules_a_run_of_it_imports() -> None:
    """A run imports only its verb's modules (VERB_MODULES): a verb missing from the map
    or mapped to the wrong module would vanish from its own run ("no such command")."""
    from lifeboat.cli import app as cli_app

    cli_app._register([])  # the root help's registration: every verb module
    registered: dict[str, set[str]] = {}
    for command in cli_app.app.registered_commands:
        assert command.callback is not None
        name = command.name or command.callback.__name__.replace("_", "-")
        registered[name] = {command.callback.__module__}
    for group in cli_app.app.registered_groups:
        name = group.name or group.typer_instance.info.name
        registered[name] = _callback_modules(group.typer_instance)
    mapped = {verb: {f"lifeboat.cli.{m}" for m in modules} for verb, modules in cli_app.VERB_MODULES.items()}
    assert set(registered) == set(mapped)
    wrong = {verb: sorted(mods - mapped[verb]) for verb, mods in registered.items() if mods - mapped[verb]}
    assert wrong == {}


def test_the_verb_of_a_command_line() -> None:
    from lifeboat.cli.verbs import invoked_verb

    assert invoked_verb(["--config", "x.toml", "--debug", "status", "--json"]) == "status"
    assert invoked_verb(["-c", "wal", "--repository=c", "snapshots"]) == "snapshots"
    assert invoked_verb(["--help", "status"]) is None  # the root help lists every verb
    assert invoked_verb(["--config", "x.toml"]) is None


def test_the_word_after_the_verb() -> None:
    from lifeboat.cli.verbs import invoked_object

    assert invoked_object(["-c", "x.toml", "restore", "db", "--target", "/t"]) == "db"
    assert invoked_object(["policy", "check"]) == "check"
    assert invoked_object(["backup", "--json", "db"]) is None  # db may be an option's value
    assert invoked_object(["backup"]) is None
    assert invoked_object(["--help", "backup", "db"]) is None


def test_a_typo_of_a_verb_still_gets_its_suggestion(tmp_path: Path) -> None:
    proc = LifeboatCli(policy=tmp_path / "none.toml").run("snapshot", check=False)
    assert proc.returncode == 2
    assert "did you mean 'snapshots'" in proc.stderr.lower()


def test_the_fast_path_takes_only_plain_lines_of_its_four_commands() -> None:
    from lifeboat.cli.entry import parse_hot

    push = parse_hot(["-c", "p.toml", "wal", "push", "--asset=db", "seg", "--async"])
    assert push is not None
    assert (push.config, push.options, push.flags, push.args) == (
        "p.toml",
        {"--asset": "db"},
        {"--async"},
        ["seg"],
    )
    fetch = parse_hot(["wal", "fetch", "--recovery-key", "k", "name", "dest"])
    assert fetch is not None and fetch.args == ["name", "dest"]
    status = parse_hot(["--config=p.toml", "status", "--json"])
    assert status is not None and (status.command, status.config, status.flags) == (
        "status",
        "p.toml",
        {"--json"},
    )
    listing = parse_hot(["snapshots", "--repository", "offsite", "--asset=db"])
    assert listing is not None
    assert (listing.command, listing.options) == ("snapshots", {"--repository": "offsite", "--asset": "db"})
    # typer's: help, debug tracebacks, copies, short-option quirks, typos, wrong arity
    for line in (
        ["wal", "push", "--help"],
        ["--debug", "wal", "push", "seg"],
        ["--repository", "c", "wal", "push", "seg"],
        ["-c=p.toml", "wal", "push", "seg"],
        ["wal", "push", "--asnyc", "seg"],
        ["wal", "push"],
        ["wal", "fetch", "name"],
        ["wal", "verify"],
        ["wal", "status"],
        ["status", "--help"],
        ["status", "now"],
        ["status", "--json=yes"],
        ["snapshots", "--asset"],
        ["snapshots", "--asset", ""],
        ["--repository", "offsite", "snapshots"],
        ["snapshot"],
        ["wal push", "seg"],
    ):
        assert parse_hot(line) is None, line


def test_version_loads_neither_typer_nor_pydantic(tmp_path: Path) -> None:
    out = tmp_path / "probe.json"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.startswith("lifeboat "), proc.stderr
    modules = set(json.loads(out.read_text())["modules"])
    assert not modules & {"typer", "click", "pydantic", "rich.console"}


def test_a_directory_objects_source_is_backed_up_and_restored_without_boto3(tmp_path: Path) -> None:
    """boto3 and botocore cost ~100 ms to import: a `dir://` source and target never load
    them (only an s3:// location does), and every byte still comes back."""
    media = tmp_path / "media"
    (media / "photos").mkdir(parents=True)
    for i in range(3):
        (media / "photos" / f"p{i}.jpg").write_bytes(os.urandom(500 + i))
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .state(tmp_path / "state")
        .data_class("standard", rpo="1d", rto="1h")
        .objects("media", f"dir://{media}")
        .write(tmp_path / "lifeboat.toml")
    )
    key = str(tmp_path / "recovery.key")
    LifeboatCli(policy=policy, cwd=tmp_path).run("init", "--recovery-key-out", key)
    restored = tmp_path / "restored"
    for args in (
        ("backup", "media"),
        ("restore", "media", "--target", f"dir://{restored}", "--recovery-key", key),
    ):
        proc, seen = _run_probed(tmp_path, policy, *args)
        assert proc.returncode == 0, proc.stderr
        loaded = [m for m in ("boto3", "botocore", "s3transfer") if m in seen["modules"]]
        assert loaded == [], f"{args[0]} of a dir:// source loaded {loaded}"
    assert {p.name: p.read_bytes() for p in (restored / "photos").iterdir()} == {
        p.name: p.read_bytes() for p in (media / "photos").iterdir()
    }


def test_a_fast_command_collects_no_cycles_but_the_children_it_forks_do() -> None:
    """The WAL drainer and the prefetcher are forked by `wal push` and `wal fetch` and run
    on after them (a drain of a long spool): their memory is collected as usual."""
    script = """
import gc, json, os
from lifeboat.cli.entry import collector_off_but_in_children
collector_off_but_in_children()
readable, writable = os.pipe()
if os.fork() == 0:
    os.write(writable, json.dumps(gc.isenabled()).encode())
    os._exit(0)
os.close(writable)
child = json.loads(os.read(readable, 100))
os.wait()
print(json.dumps({"command": gc.isenabled(), "child": child}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"command": False, "child": True}


def test_wal_commands_whose_background_child_cannot_be_forked_still_succeed(tmp_path: Path) -> None:
    """Under a pids limit fork fails (EAGAIN). The segment is archived (or restored) all
    the same: exit 1 or 70 would have PostgreSQL retry the push for ever, or end recovery
    early at a segment it was given. (fork itself is what is made to fail, in the real
    process: the limit cannot be imposed on root here.)"""
    policy = _initialised(tmp_path)
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(os.urandom(64 * 1024))
    no_fork = (
        "import os, sys\n"
        "def fork(): raise BlockingIOError(11, 'Resource temporarily unavailable')\n"
        "os.fork = fork\n"
        "sys.argv = ['lifeboat', *sys.argv[1:]]\n"
        "from lifeboat.cli.entry import main\n"
        "main()\n"
    )
    lifeboat = [sys.executable, "-c", no_fork, "--config", str(policy)]
    push = subprocess.run(
        [*lifeboat, "wal", "push", str(segment)], capture_output=True, text=True, timeout=120
    )
    assert (push.returncode, push.stderr) == (0, "")
    restored, key = tmp_path / "restored", str(tmp_path / "recovery.key")
    fetch = subprocess.run(
        [*lifeboat, "wal", "fetch", segment.name, str(restored), "--recovery-key", key],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (fetch.returncode, fetch.stderr) == (0, "")
    assert restored.read_bytes() == segment.read_bytes()
    spooled = tmp_path / "000000010000000000000002"
    spooled.write_bytes(os.urandom(64 * 1024))
    push = subprocess.run(
        [*lifeboat, "wal", "push", "--async", str(spooled)], capture_output=True, text=True, timeout=120
    )
    assert (push.returncode, push.stderr) == (0, "")  # spooled: the next push's drainer takes it
    assert [p.name for p in (tmp_path / "state" / "wal-spool" / "db").iterdir() if p.name == spooled.name]


def test_botocore_keeps_signing_in_python_though_the_aws_runtime_is_installed() -> None:
    """lifeboat installs the AWS Common Runtime for a bucket's GETs alone; botocore would
    sign every call of its own through it once it is installed (BOTO_DISABLE_CRT)."""
    script = (
        "import atexit\n"
        "def report():\n"
        "    import awscrt, botocore.compat\n"  # the runtime loads; botocore does not use it
        "    print(botocore.compat.HAS_CRT)\n"
        "atexit.register(report)\n"
        "from lifeboat.cli.entry import main\n"
        "main(['--version'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "BOTO_DISABLE_CRT"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.stdout.splitlines()[-1] == "False", proc.stdout + proc.stderr


def test_prune_keeps_a_segment_pushed_by_a_host_whose_clock_ran_ahead(tmp_path: Path) -> None:
    """A segment pushed by a database host whose clock runs 10 minutes ahead (beyond the
    5-minute skew) is refused by every reader until their clocks pass its time. Prune must
    not delete its data meanwhile: once the clocks agree, fetch gives it back (before, prune
    removed its pack and the segment was gone)."""
    policy = _initialised(tmp_path)
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(os.urandom(64 * 1024))
    cli = LifeboatCli(policy=policy, cwd=tmp_path)
    cli.run("wal", "push", "--asset", "db", str(segment), env={"LIFEBOAT_CLOCK_OFFSET": "600"})
    key = str(tmp_path / "recovery.key")
    cli.run("prune", "--recovery-key", key)
    dest = tmp_path / "fetched"
    later = {"LIFEBOAT_CLOCK_OFFSET": "700"}  # the readers' clocks have passed its time
    proc = cli.run("wal", "fetch", segment.name, str(dest), "--recovery-key", key, env=later, check=False)
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == segment.read_bytes()


def test_a_sync_push_archives_what_an_earlier_async_push_left_in_the_spool(tmp_path: Path) -> None:
    """A segment spooled while wal_async was on (acknowledged to PostgreSQL, gone from
    pg_wal) whose drain failed, then wal_async turned off: no daemon drains the spool any
    more, so the next plain push does, and the archive has no gap."""
    from tests.harness.processes import processes_mentioning
    from tests.harness.wait import wait_until

    policy = _initialised(tmp_path)
    cli = LifeboatCli(policy=policy, cwd=tmp_path)
    first, second = (tmp_path / f"00000001000000000000000{i}" for i in (1, 2))
    for segment in (first, second):
        segment.write_bytes(os.urandom(64 * 1024))
    repo, away = tmp_path / "repo", tmp_path / "repo-away"
    spool = tmp_path / "state" / "wal-spool" / "db"

    repo.rename(away)  # the store unreachable: the forked drainer fails, the segment stays
    cli.run("wal", "push", "--asset", "db", "--async", str(first))
    # its forked drainer keeps the push's command line until it ends
    wait_until(lambda: processes_mentioning(str(first)) == [], "the failed drainer to end")
    away.rename(repo)
    assert first.name in os.listdir(spool)

    cli.run("wal", "push", "--asset", "db", str(second))  # wal_async off: a plain push

    wait_until(lambda: first.name not in os.listdir(spool), "the spooled segment to be archived")
    key = str(tmp_path / "recovery.key")
    for segment in (first, second):
        dest = tmp_path / f"fetched-{segment.name}"
        cli.run("wal", "fetch", segment.name, str(dest), "--recovery-key", key)
        assert dest.read_bytes() == segment.read_bytes()
