"""The background WAL stager (#18): replay starts while the WAL is still being fetched, the
restore_command waits for the segment it needs, and the restore owns the stager: nothing
of it outlives the restore, whether it succeeds or fails."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lifeboat.assets.postgres.cluster import free_port
from lifeboat.assets.postgres.stager import FATAL, RESTORE_SCRIPT, SCRIPT, WalStager
from lifeboat.errors import NotFoundError
from lifeboat.repo import Repository
from lifeboat.storage import open_storage
from tests.harness.processes import processes_mentioning
from tests.pgsandbox import PgSandbox

# Runs the restore as a child subreaper: whatever the restore leaves running (orphans
# included) is re-parented to this wrapper, which lists its remaining children.
WRAPPER = r"""
import ctypes, json, os, subprocess, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=600)
left = []
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    try:
        stat = open(f"/proc/{entry}/stat").read()
        cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        continue
    fields = stat.rsplit(")", 1)[1].split()
    if int(fields[1]) == os.getpid() and fields[0] != "Z":
        left.append(cmdline.strip())
print(json.dumps({"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr, "left": left}))
"""


def restore_watched(pg: PgSandbox, *args: str) -> dict[str, Any]:
    cmd = pg.command("restore", "db", *args)
    wrapper = subprocess.run(
        [sys.executable, "-c", WRAPPER, *cmd],
        capture_output=True,
        text=True,
        timeout=700,
        cwd=pg.root,
        env=pg.environment(),
    )
    assert wrapper.returncode == 0, wrapper.stderr
    result: dict[str, Any] = json.loads(wrapper.stdout)
    return result


def restore_script(target: Path) -> str:
    """The restore_command script of a restore into ``target`` (its spool's): other tests'
    restores run at the same time in the other worker, with scripts of the same name."""
    return str(target.parent / f".{target.name}.lifeboat-wal" / SCRIPT)


def archive_rows(pg: PgSandbox, prefix: str, segments: int) -> None:
    for i in range(segments):
        pg.sql(f"insert into items (label) values ('{prefix} {i}')")
        pg.switch_and_wait_archived()


def test_pitr_over_many_segments_replays_while_staging_and_leaves_only_the_cluster(pg: PgSandbox):
    pg.sql("insert into items (label) values ('base')")
    pg.run("backup", "db")
    archive_rows(pg, "before", 12)
    target_lsn = pg.sql("select pg_current_wal_lsn()::text")[0][0]
    archive_rows(pg, "after", 12)
    target, port = pg.root / "restored", free_port()

    run = restore_watched(
        pg, "--target", str(target), "--lsn", target_lsn, "--start", "--port", str(port), "--json"
    )
    try:
        assert run["rc"] == 0, run["stderr"]
        out = json.loads(run["stdout"])
        assert out["ok"] and out["started"], out
        assert out["wal_segments"] >= 24  # the plan covers the archive, replay stops at the target
        rows = sorted(r[0] for r in pg.sql("select label from items", pg.restored_dsn(target, port)))
        assert rows == sorted(["base"] + [f"before {i}" for i in range(12)])
        # the restore's only survivor is the cluster it started; no stager, no waiting script
        assert len(run["left"]) == 1 and str(target) in run["left"][0] and "postgres" in run["left"][0]
        spool = pg.root / ".restored.lifeboat-wal"
        assert not spool.exists()
        assert processes_mentioning(restore_script(target)) == []
    finally:
        pg.stop_restored(target)


def test_latest_restore_replays_every_segment_then_takes_writes_without_an_end_of_recovery_checkpoint(
    pg: PgSandbox,
):
    pg.sql("insert into items (label) values ('base')")
    pg.run("backup", "db")
    archive_rows(pg, "row", 10)
    target, port = pg.root / "restored", free_port()

    run = restore_watched(pg, "--target", str(target), "--latest", "--start", "--port", str(port), "--json")
    try:
        assert run["rc"] == 0, run["stderr"]
        out = json.loads(run["stdout"])
        assert out["ok"] and out["started"] and not out["standby"], out
        dsn = pg.restored_dsn(target, port)
        # promoted only after the last staged segment was replayed: nothing cut short
        rows = sorted(r[0] for r in pg.sql("select label from items", dsn))
        assert rows == sorted(["base"] + [f"row {i}" for i in range(10)])
        assert pg.sql("select pg_is_in_recovery()", dsn) == [(False,)]
        pg.sql("insert into items (label) values ('written after the restore')", dsn)
        # promoted as a standby is (pg_ctl promote): writes did not wait for the
        # immediate end-of-recovery checkpoint that ending archive recovery forces
        log = (pg.root / "restored.log").read_text(errors="replace")
        assert "received promote request" in log
        assert "end-of-recovery" not in log
        assert not (target / "standby.signal").exists() and not (target / "recovery.signal").exists()
        assert len(run["left"]) == 1 and str(target) in run["left"][0]
    finally:
        pg.stop_restored(target)


def corrupt_ref(pg: PgSandbox, name: str) -> None:
    ref = pg.root / "repo" / "refs" / "wal" / "db" / name
    data = bytearray(ref.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ref.write_bytes(bytes(data))


def test_corrupted_segment_fails_the_restore_and_leaves_no_process_and_no_spool(pg: PgSandbox):
    pg.sql("insert into items (label) values ('base')")
    pg.run("backup", "db")
    archive_rows(pg, "row", 6)
    archived = sorted(p.name for p in (pg.root / "repo" / "refs" / "wal" / "db").iterdir())
    segments = [n for n in archived if len(n) == 24]
    victim = segments[len(segments) // 2]
    corrupt_ref(pg, victim)
    target, port = pg.root / "restored", free_port()

    run = restore_watched(pg, "--target", str(target), "--latest", "--start", "--port", str(port))
    assert run["rc"] != 0 and run["rc"] != 70, run
    lines = run["stderr"].strip().splitlines()
    assert lines[0].startswith("lifeboat: error: ") and victim in lines[0], run["stderr"]
    assert "Traceback" not in run["stderr"]
    assert run["left"] == []  # no PostgreSQL, no stager, no restore_command left behind
    assert not (target / "postmaster.pid").exists()  # never promoted short of the archive's end
    assert not (pg.root / ".restored.lifeboat-wal").exists()
    assert processes_mentioning(str(target)) == []


# -- the restore_command script itself, against a spool laid out as the stager does ----


def spool_with_plan(root: Path, pending: list[str]) -> Path:
    spool = root / ".t.lifeboat-wal"
    (spool / ".pending").mkdir(parents=True)
    for name in pending:
        (spool / ".pending" / name).touch()
    (spool / SCRIPT).write_text(RESTORE_SCRIPT)
    (spool / ".plan").write_text("\n".join(pending) + "\n")
    (spool / ".owner").touch()
    return spool


def run_script(spool: Path, name: str, dest: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["sh", str(spool / SCRIPT), name, str(dest)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


SEG = "000000010000000000000005"


def test_restore_command_waits_for_a_pending_segment_and_fails_clearly(tmp_path: Path):
    spool = spool_with_plan(tmp_path, [SEG, "000000010000000000000006", "000000010000000000000007"])
    owner = open(spool / ".owner", "rb")  # noqa: SIM115
    fcntl.flock(owner, fcntl.LOCK_EX)
    dest = tmp_path / "RECOVERYXLOG"

    # not in the plan: the archive lacks it, PostgreSQL's end of the archive (exit 1, at once)
    absent = run_script(spool, "000000010000000000000009", dest)
    assert absent.wait(timeout=30) == 1 and not dest.exists()

    # pending: waits until the stager renames it in and drops the marker
    waiting = run_script(spool, SEG, dest)
    (spool / f".tmp-{SEG}").write_bytes(b"wal bytes")
    os.replace(spool / f".tmp-{SEG}", spool / SEG)
    (spool / ".pending" / SEG).unlink()
    assert waiting.wait(timeout=30) == 0 and dest.read_bytes() == b"wal bytes"

    # the stager failed: fatal (> 125, PostgreSQL stops instead of promoting), with the reason
    failing = run_script(spool, "000000010000000000000006", tmp_path / "x")
    reason = spool / ".failed.tmp"  # in place at once, as the stager writes it
    reason.write_text("wal/db/000000010000000000000006 is missing from the repository\n")
    reason.rename(spool / ".failed")
    _, err = failing.communicate(timeout=30)
    assert failing.returncode == FATAL and "000000010000000000000006 is missing" in err
    (spool / ".failed").unlink()

    # the restore owning the stager is gone (its lock is free): fatal too, never a wait forever
    orphaned = run_script(spool, "000000010000000000000007", tmp_path / "y")
    owner.close()
    _, err = orphaned.communicate(timeout=30)
    assert orphaned.returncode == FATAL and "has stopped" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_stager_leaves_its_reason_whole_and_private_for_the_script(tmp_path: Path):
    """The reason is put in place at once (a script finding ``.failed`` reads all of it),
    readable by its owner alone, and the script stops PostgreSQL with it."""
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    _, _, recovery = Repository.create(storage, cache_dir=tmp_path / "cache")
    spool = spool_with_plan(tmp_path, ["000000010000000000000006"])
    owner = open(spool / ".owner", "rb")  # noqa: SIM115
    fcntl.flock(owner, fcntl.LOCK_EX)
    stager = WalStager(Repository.open(storage, recovery_key=recovery), spool, {}, user=None)

    reason = "wal/db/000000010000000000000006 is missing from the repository"
    stager._fail(NotFoundError(reason))

    assert (spool / ".failed").read_text() == reason + "\n"
    assert (spool / ".failed").stat().st_mode & 0o777 == 0o600
    assert not [p.name for p in spool.iterdir() if p.name.startswith(".failed") and p.name != ".failed"]
    failing = run_script(spool, "000000010000000000000006", tmp_path / "x")
    _, err = failing.communicate(timeout=30)
    assert failing.returncode == FATAL and "000000010000000000000006 is missing" in err
    owner.close()


def packs(pg: PgSandbox) -> set[Path]:
    return set((pg.root / "repo" / "data").glob("*/*"))


def wait_for(what: str, check: Any, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stalled_restore(pg: PgSandbox, target: Path, port: int) -> tuple[subprocess.Popen[bytes], list[Path]]:
    """A --start restore whose WAL packs (archived after the backup) are FIFOs: the stager's
    reads of them block (a stalled storage), so replay is certainly waiting on a segment."""
    pg.sql("insert into items (label) values ('base')")
    pg.run("backup", "db")
    before = packs(pg)
    archive_rows(pg, "row", 5)
    stalled = sorted(packs(pg) - before)
    assert stalled
    for pack in stalled:
        os.replace(pack, pack.with_name(pack.name + ".aside"))
        os.mkfifo(pack, 0o644)
    cmd = pg.command("restore", "db", "--target", str(target), "--latest", "--start", "--port", str(port))
    restore = subprocess.Popen(
        cmd,
        cwd=pg.root,
        env=pg.environment(),
        start_new_session=True,
        stderr=subprocess.PIPE,
        preexec_fn=_ctrl_c_delivered,
    )
    waiting = lambda: processes_mentioning(restore_script(target)) != []  # noqa: E731
    wait_for("replay to wait on a stalled segment", waiting)
    return restore, stalled


def _ctrl_c_delivered() -> None:
    """A suite started in the background (`make test &`) ignores SIGINT, and every process it
    starts inherits that: Python then never raises KeyboardInterrupt, and the restore would
    run on to pg_ctl's start timeout. The restore under test gets Ctrl-C as a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def unstall(stalled: list[Path]) -> None:
    for pack in stalled:
        pack.unlink()
        os.replace(pack.with_name(pack.name + ".aside"), pack)


def test_restore_killed_mid_replay_stops_postgres_and_a_retry_succeeds(pg: PgSandbox):
    target, port = pg.root / "restored", free_port()
    restore, stalled = stalled_restore(pg, target, port)
    try:
        os.killpg(restore.pid, signal.SIGKILL)
        restore.wait(timeout=30)
        # the restore_command sees its owner gone: PostgreSQL stops instead of promoting
        wait_for("the restored PostgreSQL to stop", lambda: not (target / "postmaster.pid").exists())
        log = (pg.root / "restored.log").read_text(errors="replace")
        assert "has stopped before staging it" in log
        assert processes_mentioning(restore_script(target)) == []
    finally:
        if restore.poll() is None:
            os.killpg(restore.pid, signal.SIGKILL)
        unstall(stalled)
    # nothing of the killed attempt blocks the next one (--force: the stopped data directory)
    again = ["--target", str(target), "--latest", "--start", "--port", str(port), "--force"]
    out = pg.json("restore", "db", *again)
    try:
        assert out["ok"], out
        rows = sorted(r[0] for r in pg.sql("select label from items", pg.restored_dsn(target, port)))
        assert rows == sorted(["base"] + [f"row {i}" for i in range(5)])
    finally:
        pg.stop_restored(target)


def release_readers(fifos: list[Path]) -> None:
    """A writer opens and closes each FIFO a worker is blocked on: its read then fails."""
    for fifo in fifos:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # no reader on this one (ENXIO)


def lifeboat_pid(pid: int) -> int:
    """The lifeboat process itself: runuser's child when the tests run as root."""
    for entry in os.listdir("/proc"):
        try:
            status = Path(f"/proc/{entry}/status").read_text() if entry.isdigit() else ""
        except OSError:
            continue
        if f"\nPPid:\t{pid}\n" in status:
            return int(entry)
    return pid


def test_interrupted_restore_stops_postgres_and_removes_its_spool(pg: PgSandbox):
    target, port = pg.root / "restored", free_port()
    restore, stalled = stalled_restore(pg, target, port)
    try:
        os.kill(lifeboat_pid(restore.pid), signal.SIGINT)  # Ctrl-C (runuser would escalate to SIGKILL)
        # the restore tells replay to give up at once; its workers end when their reads do
        wait_for("the restored PostgreSQL to stop", lambda: not (target / "postmaster.pid").exists())

        def ended() -> bool:
            release_readers(stalled)
            return restore.poll() is not None

        wait_for("the interrupted restore to end", ended)
        stderr = restore.stderr.read().decode() if restore.stderr else ""
        assert restore.returncode == 130 and "Traceback" not in stderr, stderr
        log = (pg.root / "restored.log").read_text(errors="replace")
        # stopped by the restore as it unwound (before, by the fatal restore_command: "WAL
        # staging failed: the restore stopped before the WAL was staged")
        assert "database system is shut down" in log
        assert not (pg.root / ".restored.lifeboat-wal").exists()
        assert processes_mentioning(restore_script(target)) == [] and processes_mentioning(str(target)) == []
    finally:
        if restore.poll() is None:
            os.killpg(restore.pid, signal.SIGKILL)
        unstall(stalled)


def test_a_refused_restore_leaves_the_spool_a_restore_before_it_kept(pg: PgSandbox):
    """A restore without --start keeps its spool for the `pg_ctl start` that follows; a
    second restore into the same target that is refused must not take it away, and one
    that finds the spool's owner lock held (a restore still running) is refused."""
    pg.sql("insert into items (label) values ('base')")
    pg.run("backup", "db")
    archive_rows(pg, "row", 2)
    target = pg.root / "kept"
    pg.run("restore", "db", "--target", str(target), "--latest")
    spool = pg.root / ".kept.lifeboat-wal"
    staged = sorted(p.name for p in spool.iterdir())
    assert any(name.startswith("00000001") for name in staged), staged
    proc = pg.run("restore", "db", "--target", str(target), "--latest", check=False)
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert sorted(p.name for p in spool.iterdir()) == staged  # the later pg_ctl start finds its WAL
    with open(spool / ".owner", "rb") as owner:
        fcntl.flock(owner, fcntl.LOCK_EX)  # as a running restore's stager holds it
        proc = pg.run("restore", "db", "--target", str(target), "--latest", "--force", check=False)
    assert proc.returncode == 2 and "another restore" in proc.stderr and "Traceback" not in proc.stderr
    assert (target / "PG_VERSION").is_file() and sorted(p.name for p in spool.iterdir()) == staged
    pg.run("restore", "db", "--target", str(target), "--latest", "--force")  # the lock is free again
    assert (target / "PG_VERSION").is_file() and spool.is_dir()


def test_a_restore_interrupted_during_its_checks_leaves_no_server_running(pg: PgSandbox):
    """SIGTERM while the policy's SQL checks run on the started copy: the restore stops the
    copy before it exits (its spool is gone with it, and nothing would watch it)."""
    import psycopg

    from tests.harness.wait import wait_until

    pg.builder.table(
        "assets", "db", checks=[{"name": "slow", "sql": "select pg_sleep(600) is not null", "expect": "t"}]
    )
    pg.write_policy()
    pg.sql("insert into items (label) values ('base')")
    pg.run("backup", "db")
    target, port = pg.root / "interrupted", free_port()
    proc = pg.popen("restore", "db", "--target", str(target), "--latest", "--start", "--port", str(port))
    dsn = pg.restored_dsn(target, port)

    def sleeping() -> bool:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
                query = "select count(*) from pg_stat_activity where query like 'select pg_sleep(600)%'"
                row = conn.execute(query).fetchone()
                return row is not None and row[0] > 0
        except psycopg.OperationalError:
            return False

    try:
        wait_until(sleeping, "the slow check running on the restored copy", timeout=300)
        os.kill(pg.lifeboat_pid(proc), signal.SIGTERM)
        proc.wait(timeout=120)
        assert proc.returncode != 0
        assert not (target / "postmaster.pid").exists()
        assert processes_mentioning(str(target)) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        pg.stop_restored(target)


def test_restore_command_that_cannot_copy_a_staged_segment_stops_recovery(tmp_path: Path):
    """A staged segment the script can neither link nor copy to %p (a full disk, a pg_wal
    on another filesystem that is not writable): PostgreSQL would take exit 1 for the end
    of the archive and end recovery early, so the script exits FATAL and leaves no part."""
    spool = spool_with_plan(tmp_path, [])
    (spool / SEG).write_bytes(b"wal bytes")
    dest = tmp_path / "no-such-directory" / "RECOVERYXLOG"
    script = run_script(spool, SEG, dest)
    script.communicate(timeout=30)
    assert script.returncode == FATAL and not dest.exists()
