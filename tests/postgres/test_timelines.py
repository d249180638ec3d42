"""Restores never harm production: archiving off in restored copies, exact quoting,
the archive's timeline tree (failover vs divergent branch), standby restores."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifeboat.assets.postgres.cluster import PgCluster, free_port
from lifeboat.assets.postgres.configure import archive_command
from lifeboat.assets.postgres.quoting import setting
from lifeboat.assets.postgres.timelines import Timeline, TimelineTree, added_by_branch
from lifeboat.assets.postgres.walnames import Segment
from lifeboat.assets.registry import load_policy
from lifeboat.daemon.runner import Daemon
from tests.pgsandbox import PgSandbox, destroy, make_sandbox


def labels(pg: PgSandbox, target: Path, port: int) -> list[str]:
    return sorted(r[0] for r in pg.sql("select label from items", pg.restored_dsn(target, port)))


def archived(pg: PgSandbox) -> list[str]:
    return sorted(p.name for p in (pg.root / "repo" / "refs" / "wal" / "db").iterdir())


def wait_archived(pg: PgSandbox, dsn: str, timeout: float = 60) -> str:
    """pg_switch_wal on the cluster at ``dsn`` and wait until its archiver shipped it."""
    segment = str(pg.sql("select pg_walfile_name(pg_current_wal_lsn())", dsn)[0][0])
    pg.sql("select pg_switch_wal()", dsn)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = pg.sql("select last_archived_wal from pg_stat_archiver", dsn)[0][0]
        if last and last >= segment:
            return segment
        time.sleep(0.1)
    raise AssertionError(f"{segment} not archived: {pg.sql('select * from pg_stat_archiver', dsn)}")


def test_staging_restore_never_writes_into_production_archive(pg: PgSandbox) -> None:
    pg.sql("insert into items (label) values ('prod-1')")
    pg.run("backup", "db")
    pg.switch_and_wait_archived()
    stage, stage_port = pg.root / "stage", free_port()
    pg.run("restore", "db", "--target", str(stage), "--latest", "--start", "--port", str(stage_port))
    try:
        conf = (stage / "postgresql.conf").read_text()
        assert "# disabled by lifeboat restore (archiving off): archive_command" in conf
        dsn = pg.restored_dsn(stage, stage_port)
        # the backup carried production's archive_command: the staging copy must not use it
        assert "lifeboat" in (pg.root / "pgdata" / "postgresql.conf").read_text()
        assert pg.sql("show archive_mode", dsn)[0][0] == "off"
        assert pg.sql("show archive_command", dsn)[0][0] in ("", "(disabled)")
        pg.sql("insert into items (label) values ('staging')", dsn)
        pg.sql("select pg_switch_wal()", dsn)
        pg.sql("checkpoint", dsn)
        pg.sql("insert into items (label) values ('prod-2')")
        pg.switch_and_wait_archived()
        again, port = pg.root / "again", free_port()
        pg.run("restore", "db", "--target", str(again), "--latest", "--start", "--port", str(port))
        try:
            assert labels(pg, again, port) == ["prod-1", "prod-2"]
        finally:
            pg.stop_restored(again)
    finally:
        pg.stop_restored(stage)
    assert not [n for n in archived(pg) if not n.startswith("00000001")], archived(pg)


@pytest.fixture
def weird() -> Iterator[PgSandbox]:
    sandbox = make_sandbox("re po 'q $(touch x)")
    yield sandbox
    destroy(sandbox)


def test_paths_with_space_quote_and_command_substitution(weird: PgSandbox) -> None:
    pg = weird
    pg.sql("insert into items (label) values ('before')")
    pg.run("backup", "db")
    xid = str(pg.sql("insert into items (label) values ('A') returning xmin::text")[0][0])
    lsn = str(pg.sql("select pg_current_wal_lsn()::text")[0][0])
    pg.sql("insert into items (label) values ('B')")
    pg.switch_and_wait_archived()
    for case, args in {"lsn": ["--lsn", lsn], "xid": ["--xid", xid]}.items():
        target, port = pg.root / f"t {case} 'q $(touch x)", free_port()
        out = pg.json("restore", "db", "--target", str(target), "--port", str(port), "--start", *args)
        try:
            assert out["ok"], out
            assert labels(pg, target, port) == ["A", "before"], case
            assert out["archiving"] == "off"
            assert "postgresql.conf: archive_command" in out["archive_settings_disabled"]
            assert "lifeboat" not in json.dumps(out["archive_settings_disabled"])  # names, not commands
        finally:
            pg.stop_restored(target)
    places = [Path.cwd(), pg.root, pg.root.parent, pg.root / "pgdata", Path("/")]
    places += [p for p in pg.root.iterdir() if p.is_dir()]
    assert not [p for p in places if (p / "x").exists()]
    assert not list(pg.root.parent.rglob("x"))


def test_malformed_recovery_targets_are_one_line_errors(pg: PgSandbox) -> None:
    pg.sql("insert into items (label) values ('base')")
    pg.run("backup", "db")
    for args, word in [
        (["--xid", "12'; select 1"], "--xid"),
        (["--lsn", "0/1' recovery_target_action='shutdown"], "--lsn"),
        (["--lsn", "nothex"], "--lsn"),
        (["--timeline", "9"], "timeline 9 is not in the archive"),
    ]:
        proc = pg.run("restore", "db", "--target", str(pg.root / "bad"), *args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert word in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
        assert not (pg.root / "bad").exists()
    # a restore point name is any string, written escaped
    name = "it's \\ odd"
    pg.sql(f"select pg_create_restore_point('{name.replace(chr(39), chr(39) * 2)}')")
    pg.sql("insert into items (label) values ('after point')")
    pg.switch_and_wait_archived()
    target, port = pg.root / "named", free_port()
    pg.run("restore", "db", "--target", str(target), "--port", str(port), "--start", "--name", name)
    try:
        assert labels(pg, target, port) == ["base"]
    finally:
        pg.stop_restored(target)


def test_pg_configure_quotes_archive_command(weird: PgSandbox) -> None:
    out = weird.json("pg", "configure", "db")
    command = out["settings"]["archive_command"]
    assert f"'{weird.policy}'" not in command  # the quote inside the path is escaped
    weird.run("pg", "configure", "db", "--apply")
    weird.sql("insert into items (label) values ('configured')")
    segment = weird.switch_and_wait_archived()
    assert segment in archived(weird)
    assert not os.path.exists(weird.root / "pgdata" / "x")


def start_restored(pg: PgSandbox, target: Path, port: int) -> str:
    cluster = PgCluster(target, port, target.parent / f".{target.name}.sock", pg.cluster.pg_bin, pg.user)
    cluster.start()
    cluster.wait_promoted()
    return pg.restored_dsn(target, port)


def test_hand_archiving_staging_clone_is_a_divergent_branch_never_followed(pg: PgSandbox) -> None:
    pg.sql("insert into items (label) values ('prod-1')")
    pg.run("backup", "db")
    pg.switch_and_wait_archived()
    stage, stage_port = pg.root / "stage", free_port()
    pg.run("restore", "db", "--target", str(stage), "--latest", "--port", str(stage_port))
    # an operator switches archiving back on in the staging copy, by hand
    with open(stage / "postgresql.auto.conf", "a") as fh:
        command = archive_command(sys.executable, pg.policy, "db")
        fh.write("archive_mode = on\n" + setting("archive_command", command) + "\n")
    dsn = start_restored(pg, stage, stage_port)
    try:
        pg.sql("insert into items (label) values ('staging')", dsn)
        assert wait_archived(pg, dsn).startswith("00000002")
        pg.sql("insert into items (label) values ('prod-2')")
        pg.switch_and_wait_archived()
    finally:
        pg.stop_restored(stage)
    assert "00000002.history" in archived(pg)
    proc = pg.run("wal", "verify", check=False)
    assert proc.returncode == 1 and "timeline 2 is a divergent branch" in proc.stdout, proc.stdout
    report = json.loads(pg.run("wal", "verify", "--json", check=False).stdout)
    (branch,) = report["divergent"]
    assert (branch["timeline"], branch["parent"], branch["newest_wal_on"]) == (2, 1, 1)
    status = pg.run("status", "--json", check=False)
    db = next(a for a in json.loads(status.stdout)["assets"] if a["asset"] == "db")
    assert status.returncode == 1 and db["divergent"] and "divergent WAL branch" in " ".join(db["breaches"])
    daemon = Daemon(load_policy(pg.policy), jobs=[])
    daemon.refresh_status()
    alerts = json.loads((pg.root / ".lifeboat" / "alerts.json").read_text())
    assert "timeline 2 forked from 1" in alerts["wal-divergence:db"]
    again, port = pg.root / "again", free_port()
    out = pg.json("restore", "db", "--target", str(again), "--latest", "--start", "--port", str(port))
    try:
        assert out["timeline"]["followed"] == 1 and out["timeline"]["divergent"], out["timeline"]
        assert labels(pg, again, port) == ["prod-1", "prod-2"]
        conf = (again / "postgresql.auto.conf").read_text()
        assert "recovery_target_timeline = '1'" in conf and "'latest'" not in conf
    finally:
        pg.stop_restored(again)
    forced, port = pg.root / "forced", free_port()
    out = pg.json("restore", "db", "--target", str(forced), "--start", "--port", str(port), "--timeline", "2")
    try:
        assert out["timeline"]["followed"] == 2
        assert labels(pg, forced, port) == ["prod-1", "staging"]
    finally:
        pg.stop_restored(forced)


def test_failover_timeline_is_followed_and_earlier_times_stay_on_timeline_one(pg: PgSandbox) -> None:
    pg.sql("insert into items (label) values ('prod-1')")
    pg.run("backup", "db")
    pg.sql("insert into items (label) values ('prod-2')")
    pg.switch_and_wait_archived()
    noted = pg.sql("select clock_timestamp()")[0][0]  # the server's clock: prod-3 commits after it
    pg.sql("insert into items (label) values ('prod-3')")
    pg.switch_and_wait_archived()
    pg.cluster.stop()  # the old primary is gone
    new, new_port = pg.root / "new-primary", free_port()
    out = pg.json(
        "restore", "db", "--target", str(new), "--latest", "--start", "--port", str(new_port), "--archive"
    )
    assert out["archiving"].startswith("on")
    dsn = pg.restored_dsn(new, new_port)
    try:
        pg.sql("insert into items (label) values ('tl2')", dsn)
        assert wait_archived(pg, dsn).startswith("00000002")
    finally:
        pg.stop_restored(new)
    report = pg.json("wal", "verify")
    assert report["ok"] and not report["divergent"] and report["newest_timeline"] == 2
    latest, port = pg.root / "latest", free_port()
    out = pg.json("restore", "db", "--target", str(latest), "--latest", "--start", "--port", str(port))
    try:
        assert out["timeline"]["followed"] == 2 and out["timeline"]["path"] == [1, 2]
        assert labels(pg, latest, port) == ["prod-1", "prod-2", "prod-3", "tl2"]
    finally:
        pg.stop_restored(latest)
    early, port = pg.root / "early", free_port()
    out = pg.json(
        "restore", "db", "--target", str(early), "--at", noted.isoformat(), "--start", "--port", str(port)
    )
    try:
        assert out["timeline"]["followed"] == 1
        assert labels(pg, early, port) == ["prod-1", "prod-2"]
    finally:
        pg.stop_restored(early)


def test_drill_restores_with_archiving_off_and_proves_the_archive_untouched(pg: PgSandbox) -> None:
    with open(pg.policy, "a") as fh:
        fh.write('\n[drills.pitr]\nscenario = "pg-pitr"\nassets = ["db"]\nevidence_dir = "evidence"\n')
    pg.sql("insert into items (label) values ('before drill')")
    pg.run("backup", "db")
    pg.sql("insert into items (label) values ('replayed')")  # the drill's recovery point
    pg.switch_and_wait_archived()
    before = archived(pg)
    out = pg.json("drill", "run", "pitr")
    check = next(c for c in out["checks"] if c["name"] == "archive untouched")
    assert check["ok"] and "archiving off" in check["detail"], check
    assert out["verdict"] == "pass", out["reasons"]
    assert [n for n in archived(pg) if n not in before and not n.startswith("00000001")] == []


def test_the_first_gap_replay_meets_follows_the_failover_path() -> None:
    tree = TimelineTree()
    tree.timelines[1] = Timeline(1, first=Segment(1, 2), last=Segment(1, 10))
    tree.timelines[2] = Timeline(2, parent=1, fork_segment=10, first=Segment(2, 10), last=Segment(2, 14))
    base = Segment(1, 5)
    assert tree.replay_timeline(base) == 1  # no time on either: the lower, the original
    assert tree.first_gap(2, base, {1: set(range(2, 11)), 2: set(range(10, 15))}) is None
    # the fork's segment is the child's: the parent's copy ends at the switch point
    gap = tree.first_gap(2, base, {1: set(range(5, 11)), 2: set(range(11, 15))})
    assert gap is not None and gap.missing == Segment(2, 10)
    assert (gap.before, gap.after) == (Segment(1, 9), Segment(2, 11))
    # a gap before the fork: replay stops on timeline 1, whatever timeline 2 holds
    gap = tree.first_gap(2, base, {1: {5, 6, 8, 9, 10}, 2: set(range(10, 15))})
    assert gap is not None and gap.missing == Segment(1, 7)
    assert (gap.before, gap.after) == (Segment(1, 6), Segment(1, 8))
    # the base's own first segment missing: nothing can be replayed
    gap = tree.first_gap(1, base, {1: {6, 7, 8, 9, 10}})
    assert gap is not None and gap.before is None and gap.missing == base
    # gaps before the base backup do not count
    assert tree.first_gap(2, base, {1: {2, 5, 6, 7, 8, 9}, 2: set(range(10, 15))}) is None
    # streaming: what comes before the segment being streamed must be there too
    whole = {1: set(range(5, 10)), 2: set(range(10, 15))}
    gap = tree.first_gap(2, base, {**whole, 2: whole[2] | {17}}, until=17)
    assert gap is not None and gap.missing == Segment(2, 15) and gap.after == Segment(2, 17)
    # a base taken on timeline 1 after timeline 2 forked cannot follow it
    late = Segment(1, 12)
    assert tree.first_gap(2, late, {1: set(range(5, 13)), 2: set(range(10, 15))}) is None
    tree.timelines[2].newest_time = datetime(2026, 1, 2, tzinfo=UTC)
    tree.timelines[1].newest_time = datetime(2026, 1, 1, tzinfo=UTC)
    assert (tree.replay_timeline(base), tree.replay_timeline(late)) == (2, 1)
    # a timeline whose parent is not known (its history sealed for another writer) is taken
    # to fork from the base's at its first segment
    tree.timelines[2].parent, tree.timelines[2].fork_segment = None, None
    assert tree.replay_timeline(base) == 2
    gap = tree.first_gap(2, base, {1: {5, 6, 7, 8}, 2: set(range(10, 15))})
    assert gap is not None and gap.missing == Segment(1, 9)
    # failed back to a third host: timeline 3's history sealed too, timeline 2's readable;
    # 3 is taken to fork from 2 (the highest below it), not from the base's timeline
    tree.timelines[2].parent, tree.timelines[2].fork_segment = 1, 10
    tree.timelines[3] = Timeline(3, first=Segment(3, 20), last=Segment(3, 22))
    tree.timelines[3].newest_time = datetime(2026, 1, 3, tzinfo=UTC)
    held = {1: set(range(5, 10)), 2: set(range(10, 20)), 3: {20, 21, 22}}
    assert tree.replay_timeline(base) == 3 and tree.first_gap(3, base, held) is None
    assert tree.replay_end(3, base) == Segment(3, 22)
    # ...but never through a divergent branch: were 2 a staging clone's, 3 forked from 1
    tree.timelines[2].divergent = True
    assert tree.first_gap(3, base, {1: set(range(5, 20)), 3: {20, 21, 22}}) is None
    # nor through one forked from it (the clone promoted again); but a base on the divergent
    # branch itself follows it
    clone = TimelineTree({t: Timeline(t) for t in (1, 2, 3, 4)})
    clone.timelines[1].first, clone.timelines[1].last = Segment(1, 2), Segment(1, 30)
    clone.timelines[2].parent, clone.timelines[2].fork_segment, clone.timelines[2].divergent = 1, 10, True
    clone.timelines[3].parent, clone.timelines[3].fork_segment = 2, 12
    clone.timelines[3].first, clone.timelines[3].last = Segment(3, 12), Segment(3, 14)
    clone.timelines[4].first, clone.timelines[4].last = Segment(4, 31), Segment(4, 33)
    assert clone._path_from(1, 4) == [1, 4]
    assert clone._path_from(2, 4) == [2, 3, 4]
    tree.timelines[2].divergent = False
    # right after a failover: the new timeline's history archived, no segment of it yet;
    # replay ends with the old timeline's last whole segment
    del tree.timelines[3]
    tree.timelines[2].first = tree.timelines[2].last = None
    assert tree.first_gap(2, base, {1: set(range(5, 10))}) is None
    assert tree.replay_end(2, base) == Segment(1, 9)
    assert tree.replay_end(2, base, until=12) == Segment(2, 12)  # streamed: up to the partial
    # a (forged) name far ahead: the held names are walked, never the range up to it
    tree.timelines[1].last = Segment(1, 2**40)
    gap = tree.first_gap(1, base, {1: {5, 6, 2**40}})
    assert gap is not None and (gap.missing, gap.after) == (Segment(1, 7), Segment(1, 2**40))


def test_archive_files_only_a_staging_branch_can_have_written() -> None:
    before = {"000000010000000000000003", "000000010000000000000004"}
    after = before | {
        "000000010000000000000005",  # production went on archiving: not the drill's
        "00000002.history",
        "000000020000000000000005",
        "000000010000000000000004.partial",
    }
    assert added_by_branch(before, after, 2) == [
        "000000010000000000000004.partial",
        "00000002.history",
        "000000020000000000000005",
    ]
    assert added_by_branch(before, before | {"000000010000000000000005"}, 2) == []


def test_wal_push_refuses_another_clusters_segment_naming_both_ids(pg: PgSandbox) -> None:
    pg.sql("insert into items (label) values ('mine')")
    pg.run("backup", "db")
    mine = int(pg.sql("select system_identifier from pg_control_system()")[0][0])
    other = PgCluster(pg.root / "other", free_port(), pg.root / "other-sock")
    other.initdb()
    other.start()
    try:
        theirs = int(pg.sql("select system_identifier from pg_control_system()", other.dsn)[0][0])
        name = str(pg.sql("select pg_walfile_name(pg_current_wal_lsn())", other.dsn)[0][0])
        pg.sql("select pg_switch_wal()", other.dsn)
        stray = pg.root / "stray" / name
        stray.parent.mkdir()
        stray.write_bytes((pg.root / "other" / "pg_wal" / name).read_bytes())
    finally:
        other.stop()
    assert mine != theirs
    before = archived(pg)
    proc = pg.run("wal", "push", "--asset", "db", str(stray), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert str(mine) in proc.stderr and str(theirs) in proc.stderr
    assert archived(pg) == before
    # the asset's own segments still archive, on any timeline (see the failover test)
    pg.sql("insert into items (label) values ('still archiving')")
    assert pg.switch_and_wait_archived() in archived(pg)


def test_standby_restore_stays_in_recovery_with_a_conninfo_placeholder(pg: PgSandbox) -> None:
    pg.sql("insert into items (label) values ('base')")
    pg.run("backup", "db")
    pg.sql("insert into items (label) values ('after')")
    pg.switch_and_wait_archived()
    target, port = pg.root / "standby", free_port()
    args = ["--target", str(target), "--latest", "--start", "--port", str(port), "--standby"]
    out = pg.json("restore", "db", *args)
    try:
        assert out["ok"] and out["standby"], out
        assert (target / "standby.signal").exists() and not (target / "recovery.signal").exists()
        dsn = pg.restored_dsn(target, port)
        assert pg.sql("select pg_is_in_recovery()", dsn)[0][0] is True
        assert labels(pg, target, port) == ["after", "base"]
        conf = (target / "postgresql.auto.conf").read_text()
        assert "# primary_conninfo = " in conf and "recovery_target_action" not in conf
    finally:
        pg.stop_restored(target)


def test_split_brain_latest_follows_the_branch_with_the_newest_wal_and_flags_it(pg: PgSandbox) -> None:
    pg.sql("insert into items (label) values ('prod-1')")
    pg.run("backup", "db")
    pg.switch_and_wait_archived()
    # a second primary is promoted while the first one goes on writing and archiving
    new, new_port = pg.root / "second-primary", free_port()
    args = ["--target", str(new), "--latest", "--start", "--port", str(new_port), "--archive"]
    pg.run("restore", "db", *args)
    dsn = pg.restored_dsn(new, new_port)
    try:
        pg.sql("insert into items (label) values ('old-primary')")
        pg.switch_and_wait_archived()
        pg.sql("insert into items (label) values ('new-primary')", dsn)
        assert wait_archived(pg, dsn).startswith("00000002")  # archived last: the newest WAL
    finally:
        pg.stop_restored(new)
    report = json.loads(pg.run("wal", "verify", "--json", check=False).stdout)
    assert not report["ok"] and report["newest_timeline"] == 2
    (branch,) = report["divergent"]
    assert (branch["timeline"], branch["parent"], branch["newest_wal_on"]) == (2, 1, 2)
    assert pg.run("status", check=False).returncode == 1
    latest, port = pg.root / "latest", free_port()
    out = pg.json("restore", "db", "--target", str(latest), "--latest", "--start", "--port", str(port))
    try:
        assert out["timeline"]["followed"] == 2 and "divergent branch" in out["timeline"]["reason"]
        assert labels(pg, latest, port) == ["new-primary", "prod-1"]
    finally:
        pg.stop_restored(latest)
