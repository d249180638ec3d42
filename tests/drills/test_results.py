"""Which drill results count (drills/results.py), on bundles signed by write_bundle with a
key of the test's own: the pure rules, without running drills (the attack tests run them:
tests/attacks/test_status_forged_drill.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifeboat.crypto.pinning import fingerprint
from lifeboat.drills.evidence import reserve_bundle, write_bundle
from lifeboat.drills.results import AuditedBundle, newest_audited_bundles, read_drill_results

KEY = Ed25519PrivateKey.generate()
TRUSTED = {fingerprint(KEY.public_key()): None}


def _bundle(evidence: Path, started: str, **drill: Any) -> Path:
    bundle = reserve_bundle(evidence, f"{started[:10]}-x")
    write_bundle(bundle, {"drill": "x", "started": started, **drill}, {}, "", "", KEY)
    return bundle


def test_a_stopped_run_does_not_hide_the_full_run_before_it(tmp_path: Path) -> None:
    """A run that stopped after restoring some assets is not the last word on the others:
    the full run before it is still read (not skipped as older than the drill's newest)."""
    full = _bundle(tmp_path, "2026-12-01T00:00:00+00:00", verdict="fail", achieved={"a": {}, "b": {}})
    _bundle(tmp_path, "2026-12-02T00:00:00+00:00", verdict="fail", stopped="disk full", targets={"a": {}})
    found = read_drill_results({"x": tmp_path}, lambda: TRUSTED)
    assert next(r["bundle"] for r in found.results) == str(full) and not found.refused
    # a full run after both: those before it are not read at all (they could change nothing)
    _bundle(tmp_path, "2026-12-03T00:00:00+00:00", verdict="pass", achieved={"a": {}, "b": {}})
    assert len(read_drill_results({"x": tmp_path}, lambda: TRUSTED).results) == 1
    assert len(read_drill_results({"x": tmp_path}, lambda: TRUSTED, every=True).results) == 3


def test_a_result_of_another_drill_is_refused_where_it_is_put(tmp_path: Path) -> None:
    """A result of drill y in drill x's evidence would be credited to x's assets: refused.
    One of a drill the policy no longer has (renamed, removed, or a name a forger made up)
    is no asset's: passed over, without a breach for every old bundle of a renamed drill."""
    for name in ("y", "ghost", ["x"]):  # a list: what no drill writes, signed all the same
        bundle = reserve_bundle(tmp_path / "x", f"2026-12-01-{name}")
        drill = {"drill": name, "started": "2026-12-01T00:00:00+00:00", "verdict": "pass"}
        write_bundle(bundle, drill, {}, "", "", KEY)
    found = read_drill_results({"x": tmp_path / "x", "y": tmp_path / "y"}, lambda: TRUSTED)
    assert found.results == []
    assert [r.problem for r in found.refused] == ["a result of drill 'y', in the evidence of x"]


def test_the_audited_run_is_bound_by_its_own_list_of_entries(tmp_path: Path) -> None:
    """An entry from before starts were recorded names its run by sequence and hash, which
    the run's drill.json lists: another genuine run put on its path is refused."""
    other = _bundle(tmp_path, "2026-12-01T00:00:00+00:00", verdict="pass", audit_entries=["000000000001-aa"])
    entry = AuditedBundle("x", other, None, None, "000000000009-bb")
    found = read_drill_results({"x": tmp_path}, lambda: TRUSTED, [entry])
    assert found.results == [] and found.refused[0].problem.startswith("not the run the audit log names")


def test_the_newest_audited_run_is_the_one_that_started_last() -> None:
    """Two runs of a drill overlapping (the daemon's and one by hand): the one that started
    last is the newest, whichever was audited last; lines that are not entries, and a path
    with a NUL byte, are passed over."""

    def entry(seq: int, started: str, bundle: str) -> dict[str, Any]:
        details = {"drill": "x", "bundle": bundle, "started": started}
        return {"seq": seq, "hash": "ab" * 8, "operation": "drill", "time": started, "details": details}

    entries: list[object] = [
        entry(1, "2026-12-01T10:00:00+00:00", "/e/late-start"),
        entry(2, "2026-12-01T09:00:00+00:00", "/e/early-start"),  # audited after, started before
        ["not", "an", "entry"],
        entry(3, "2026-11-01T00:00:00+00:00", "/e/\0nul"),
    ]
    [newest] = newest_audited_bundles(entries)
    assert (newest.bundle, newest.entry_id) == (Path("/e/late-start"), "000000000001-abababababababab")


def test_the_newest_run_whose_evidence_is_being_signed_is_not_a_refusal(tmp_path: Path) -> None:
    """Between the run's verdict entry and its signed bundle, the audit log names the empty
    directory reserve_bundle made: status then shows the drill's previous result, not a
    refusal (it used to say 'SHA256SUMS is missing' for that moment). A run that ended
    there, past the grace, is named as never written."""
    from datetime import datetime, timedelta

    from lifeboat.drills.results import EVIDENCE_WRITE_GRACE, NEVER_WRITTEN

    before = _bundle(tmp_path, "2026-12-01T00:00:00+00:00", verdict="pass")
    reserved = reserve_bundle(tmp_path, "2026-12-02-x")
    audited_at = datetime.fromisoformat("2026-12-02T01:00:00+00:00")
    entry = AuditedBundle("x", reserved, audited_at, "2026-12-02T00:00:00+00:00", outcome="pass")

    found = read_drill_results({"x": tmp_path}, lambda: TRUSTED, [entry], now=audited_at)
    assert [r["bundle"] for r in found.results] == [str(before)] and not found.refused

    later = audited_at + EVIDENCE_WRITE_GRACE + timedelta(seconds=1)
    found = read_drill_results({"x": tmp_path}, lambda: TRUSTED, [entry], now=later)
    assert [(r.bundle, r.problem, r.newest_audited) for r in found.refused] == [
        (str(reserved), NEVER_WRITTEN, True)
    ]
    # once signed, it is the drill's last result
    write_bundle(
        reserved, {"drill": "x", "started": "2026-12-02T00:00:00+00:00", "verdict": "fail"}, {}, "", "", KEY
    )
    found = read_drill_results({"x": tmp_path}, lambda: TRUSTED, [entry], now=audited_at)
    assert found.results[-1]["bundle"] == str(reserved) and not found.refused


def test_the_grace_is_for_a_pass_audited_just_now_only(tmp_path: Path) -> None:
    """A failed run whose evidence is being signed is the drill's newest word at once (the
    audit log has its verdict), and a run dated ahead of this clock (a line planted with a
    far future time, or a host whose clock ran ahead) gets no grace: else the empty
    directory it names would hide the drill's newest run for ever."""
    from datetime import datetime, timedelta

    from lifeboat.drills.results import NEVER_WRITTEN

    before = _bundle(tmp_path, "2026-12-01T00:00:00+00:00", verdict="pass")
    reserved = reserve_bundle(tmp_path, "2026-12-02-x")
    audited_at = datetime.fromisoformat("2026-12-02T01:00:00+00:00")
    failed = AuditedBundle("x", reserved, audited_at, "2026-12-02T00:00:00+00:00", outcome="fail")
    found = read_drill_results({"x": tmp_path}, lambda: TRUSTED, [failed], now=audited_at)
    assert [r.problem for r in found.refused] == [
        "its evidence is being signed; the audit log has its verdict: fail"
    ]
    assert [r["bundle"] for r in found.results] == [str(before)]  # status: the refusal is newer

    ahead = AuditedBundle(
        "x", reserved, datetime.fromisoformat("2099-01-01T00:00:00+00:00"), None, outcome="pass"
    )
    found = read_drill_results({"x": tmp_path}, lambda: TRUSTED, [ahead], now=audited_at)
    assert [r.problem for r in found.refused] == [NEVER_WRITTEN]
    # within the skew allowed (a clock a minute ahead), a pass being signed is waited for
    soon = AuditedBundle("x", reserved, audited_at + timedelta(minutes=1), None, outcome="pass")
    assert not read_drill_results({"x": tmp_path}, lambda: TRUSTED, [soon], now=audited_at).refused


def test_lines_added_to_the_log_neither_renew_the_grace_nor_outrank_the_real_runs() -> None:
    """More entries naming a bundle keep its earliest time and its worst verdict; an entry
    dated ahead of this clock is no run at all; one without a recorded start (a log from
    before starts were recorded) never outranks one with it."""
    from datetime import datetime

    now = datetime.fromisoformat("2026-12-02T02:00:00+00:00")

    def entry(seq: int, time: str, bundle: str, outcome: str, started: str | None = None) -> dict[str, Any]:
        details = {"drill": "x", "bundle": bundle, **({"started": started} if started else {})}
        return {
            "seq": seq,
            "hash": "cd" * 8,
            "operation": "drill",
            "time": time,
            "outcome": outcome,
            "details": details,
        }

    real = entry(1, "2026-12-02T01:00:00+00:00", "/e/run", "fail", "2026-12-02T00:59:00+00:00")
    renewed = entry(2, "2026-12-02T01:59:00+00:00", "/e/run", "pass", "2026-12-02T00:59:00+00:00")
    [newest] = newest_audited_bundles([real, renewed], now)
    assert (newest.time, newest.outcome) == (datetime.fromisoformat("2026-12-02T01:00:00+00:00"), "fail")

    ahead = entry(3, "2099-01-01T00:00:00+00:00", "/e/planted", "pass", "2099-01-01T00:00:00+00:00")
    unstarted = entry(4, "2026-12-02T01:30:00+00:00", "/e/old-style", "pass")
    started_ahead = entry(5, "2026-12-02T01:40:00+00:00", "/e/far", "pass", "2099-01-01T00:00:00+00:00")
    [newest] = newest_audited_bundles([real, ahead, unstarted, started_ahead], now)
    assert newest.bundle == Path("/e/run")
