"""What status reads from files an insider can write (the audit log, signed results from a
key kept past its rotation) never crashes it: lines that are not entries are passed over,
and a result's fields that are not what a drill writes count as nothing measured."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from lifeboat.cli.status_run import status_table
from lifeboat.ops.status import AssetStatus, achieved_rto, audit_entries, last_drill_findings


def test_audit_lines_that_are_not_entries_are_passed_over(tmp_path: Path) -> None:
    good = {"operation": "backup", "time": "2026-12-01T00:00:00+00:00", "outcome": "ok", "asset": "a"}
    lines = ["[1, 2]", "42", '"text"', json.dumps({"operation": "backup"}), "{not json", json.dumps(good)]
    (tmp_path / "audit.jsonl").write_text("\n".join(lines) + "\n")
    assert audit_entries(tmp_path) == [good]


def test_a_malformed_result_is_a_failed_drill_with_nothing_measured() -> None:
    assert achieved_rto({"achieved": "x"}, "a") is None
    assert achieved_rto({"achieved": {"a": {"rto_s": True}}}, "a") is None
    assert achieved_rto({"achieved": {"a": {"rto_s": 12}}}, "a") == 12.0
    st = AssetStatus("a", "files", "gold", 3600.0, 600.0)
    weird = {"drill": "d", "started": "2026-12-01T00:00:00+00:00", "achieved": {"a": ["x"]}, "targets": "a"}
    last_drill_findings(st, [weird], lambda name: ["a"])
    assert (st.last_drill_verdict, st.last_drill_rto_s) == ("unknown", None)
    assert st.breaches == ["last drill d failed (2026-12-01T00:00:00)"]


def test_a_breach_quoting_markup_is_printed_as_it_is() -> None:
    """A breach quotes paths and errors from files an insider can write: `[/x]` in one is
    text in the status table, not rich markup (which would stop status with an error)."""
    breach = "drill evidence /e/[/x] refused: missing"
    st = AssetStatus("a", "files", "gold", 3600.0, 600.0, breaches=[breach])
    out = io.StringIO()
    Console(file=out, width=400).print(status_table([st]))
    assert breach in out.getvalue()
