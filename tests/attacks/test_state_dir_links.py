"""A malicious insider with the state dir (issue #14) plants links and FIFOs where lifeboat
keeps its own files: the audit log it appends to (and reads back), the directories it
tightens to 0700, a FIFO that would hold every command up, the temporary names caches are
written under, the staging a drill's cluster is given to PostgreSQL's user in. lifeboat
often runs as root, so a link followed would append to, truncate, chmod or chown any file
on the host. Each is refused before anything is changed (one error line) or not followed;
the file it points at is untouched."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest

from lifeboat.assets.postgres.cluster import chown_tree
from lifeboat.errors import RestoreError
from lifeboat.private import write_private
from tests.harness import LifeboatCli, PolicyBuilder

VICTIM_TEXT = "root:$6$canary-hash:19000:0:99999:7:::\n"


def initialised(tmp_path: Path) -> LifeboatCli:
    """A file:// repository with a files asset, its state dir at ``tmp_path / "state"``
    (made beforehand, it may be a link)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a\n")
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .state(tmp_path / "state")
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 2})
        .files("docs", [tmp_path / "data"])
        .write(tmp_path / "lifeboat.toml")
    )
    cli = LifeboatCli(policy=policy, cwd=tmp_path)
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    return cli


def test_a_link_planted_for_the_audit_log_is_refused_not_followed(tmp_path: Path) -> None:
    cli = initialised(tmp_path)
    state = tmp_path / "state"
    victim = tmp_path / "shadow"
    victim.write_text(VICTIM_TEXT)

    # the insider: the audit log swapped for a link to a file outside the state dir, then
    # for one to a file that does not exist yet (root would create it), then for a FIFO
    (state / "audit.jsonl").unlink()
    (state / "audit.jsonl").symlink_to(victim)
    absent = tmp_path / "nologin"
    for planted, what in (
        (victim, "a symbolic link"),
        (absent, "a symbolic link"),
        (None, "not a regular file"),
    ):
        (state / "audit.jsonl").unlink()
        if planted is None:
            os.mkfifo(state / "audit.jsonl")
        else:
            (state / "audit.jsonl").symlink_to(planted)
        proc = cli.run("backup", "docs", check=False, timeout=120)  # a FIFO opened would block
        assert proc.returncode == 2, proc.stderr
        assert f"{state / 'audit.jsonl'} is {what}" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert victim.read_text() == VICTIM_TEXT  # neither appended to nor rewritten
        assert not absent.exists()
        # refused before the backup: no snapshot without its audit entry
        assert json.loads(cli.run("snapshots", "--json").stdout) == []

    # control: the insider's link removed, the same backup records its entry
    (state / "audit.jsonl").unlink()
    assert cli.run("backup", "docs").returncode == 0
    assert '"operation": "backup"' in (state / "audit.jsonl").read_text()


def test_a_link_planted_at_a_caches_temporary_name_is_not_followed(tmp_path: Path) -> None:
    """The temporary name was ``.name.tmp<pid>``: known in advance. It is now random, and
    created exclusively: a link planted at the old name, or at the final name, is not
    followed."""
    victim = tmp_path / "shadow"
    victim.write_text(VICTIM_TEXT)
    cache = tmp_path / "state" / "cache" / "refs.json"
    cache.parent.mkdir(parents=True)
    planted = cache.with_name(f".{cache.name}.tmp{os.getpid()}")
    planted.symlink_to(victim)
    cache.symlink_to(victim)
    write_private(cache, b'{"refs": []}')
    assert victim.read_text() == VICTIM_TEXT
    assert cache.read_bytes() == b'{"refs": []}' and not cache.is_symlink()  # the link replaced
    assert (cache.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in cache.parent.iterdir()) == [planted.name, cache.name]


def test_a_linked_state_directory_is_neither_tightened_nor_written_into(tmp_path: Path) -> None:
    """lifeboat tightens the directories it keeps to 0700 and writes its files there; a
    link planted for one (the policy slices' directory, to /etc/sudoers.d say, where any
    file that does not parse stops sudo) would have root close the target to everyone and
    drop files into it. The link is refused: the cache goes unused, the command works. The
    operator's own link to the state dir itself is followed, as before."""
    volume = tmp_path / "volume"
    volume.mkdir()
    (tmp_path / "state").symlink_to(volume)  # the operator's: the state dir on a volume
    cli = initialised(tmp_path)
    cli.run("backup", "docs")
    assert (volume / "audit.jsonl").exists() and (volume / "cache").is_dir()

    sudoers = tmp_path / "sudoers.d"
    sudoers.mkdir()
    os.chmod(sudoers, 0o750)
    (sudoers / "admins").write_text("%admin ALL=(ALL) ALL\n")
    slices = volume / "cache" / "policy-slice"
    if slices.exists():
        for kept in slices.iterdir():
            kept.unlink()
        slices.rmdir()
    slices.symlink_to(sudoers)
    for _ in range(2):  # the slice would be made, then read
        listed = cli.run("snapshots", "--json")
        assert [s["asset"] for s in json.loads(listed.stdout)] == ["docs"]
    assert sorted(p.name for p in sudoers.iterdir()) == ["admins"]
    assert (sudoers.stat().st_mode & 0o777) == 0o750

    (volume / "cache").rename(tmp_path / "old-cache")
    (volume / "cache").symlink_to(sudoers)  # the whole cache dir, this time
    assert cli.run("backup", "docs").returncode == 0
    assert sorted(p.name for p in sudoers.iterdir()) == ["admins"]
    assert (sudoers.stat().st_mode & 0o777) == 0o750


def test_a_link_planted_in_a_drills_staging_is_not_given_to_postgres(tmp_path: Path) -> None:
    """The drill gives its staged cluster (and socket dir) to PostgreSQL's OS user: a link
    planted at that name would make it `chown -R` whatever it points at."""
    target = tmp_path / "etc"
    target.mkdir()
    (target / "shadow").write_text(VICTIM_TEXT)
    staged = tmp_path / "drills" / ".db.sock"
    staged.parent.mkdir()
    staged.symlink_to(target)
    with pytest.raises(RestoreError, match="is a symbolic link where lifeboat stages a cluster"):
        chown_tree(staged, "postgres")
    assert (target.stat().st_uid, (target / "shadow").stat().st_uid) == (0, 0)


def _postgres_user() -> bool:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return True


@pytest.mark.skipif(
    os.geteuid() != 0 or not _postgres_user(), reason="the spool belongs to PostgreSQL's user: needs root"
)
def test_a_hard_link_planted_in_postgres_spool_is_refused_not_truncated(tmp_path: Path) -> None:
    """`wal push --async` runs as PostgreSQL's OS user, which owns its spool; the daemon, or
    `lifeboat wal drain`, empties it as root. Where ``fs.protected_hardlinks`` is 0 that
    user can hard-link any file into its spool, under the name of the drain's lock file,
    which root opened for writing and so truncated. The link is made here by root, as the
    test cannot turn the protection off."""
    (tmp_path / "data").mkdir()
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .state(tmp_path / "state")
        .data_class("standard", rpo="1d", rto="1h", retention={"last": 2})
        .postgres("db", dsn="host=/nonexistent dbname=postgres")
        .write(tmp_path / "lifeboat.toml")
    )
    cli = LifeboatCli(policy=policy, cwd=tmp_path)
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    spool = tmp_path / "state" / "wal-spool" / "db"
    spool.mkdir(parents=True, mode=0o700)
    postgres = pwd.getpwnam("postgres")
    os.chown(spool, postgres.pw_uid, postgres.pw_gid)
    victim = tmp_path / "shadow"
    victim.write_text(VICTIM_TEXT)
    victim.chmod(0o640)
    os.link(victim, spool / ".drain.lock")  # the insider, as postgres

    proc = cli.run("wal", "drain", "--asset", "db", check=False)

    assert proc.returncode == 2, proc.stderr
    assert f"{spool / '.drain.lock'} is a hard link to a file with another name" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert victim.read_text() == VICTIM_TEXT  # not truncated
    assert (victim.stat().st_mode & 0o777) == 0o640  # nor chmod-ed

    # control: the insider's link gone, the same drain runs (nothing spooled, nothing sent)
    (spool / ".drain.lock").unlink()
    assert "0 spooled WAL files archived" in cli.run("wal", "drain", "--asset", "db").stdout
