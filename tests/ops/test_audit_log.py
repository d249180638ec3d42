"""The audit log's hash chain: any edit, removal or reordering is detected."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from lifeboat.audit import AuditLog, verify


def _write(path: Path, n: int) -> list[str]:
    log = AuditLog(path)
    for i in range(n):
        log.append("backup", asset=f"a{i}", snapshot=f"{i:064x}", passphrase="hunter2")
    return path.read_text().splitlines()


def test_intact_chain_verifies_and_secrets_are_redacted(tmp_path):
    lines = _write(tmp_path / "audit.jsonl", 5)
    report = verify(tmp_path / "audit.jsonl")
    assert report.ok and report.entries == 5
    assert all("hunter2" not in line for line in lines)


def test_edit_is_detected(tmp_path):
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 5)
    entry = json.loads(lines[2])
    entry["outcome"] = "failed"
    lines[2] = json.dumps(entry, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    report = verify(path)
    assert not report.ok and report.first_bad_line == 3 and "edited" in (report.problem or "")


def test_removed_line_is_detected(tmp_path):
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 5)
    del lines[1]
    path.write_text("\n".join(lines) + "\n")
    report = verify(path)
    assert not report.ok and report.first_bad_line == 2 and "missing" in (report.problem or "")


def test_reordered_lines_are_detected(tmp_path):
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 5)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_text("\n".join(lines) + "\n")
    assert not verify(path).ok


def test_every_line_is_mirrored_into_the_repository(tmp_path):
    mirrored: dict[str, bytes] = {}
    log = AuditLog(tmp_path / "audit.jsonl", mirror=lambda name, data: mirrored.__setitem__(name, data))
    for i in range(3):
        assert log.append("check", n=i).mirrored
    local = (tmp_path / "audit.jsonl").read_bytes().splitlines(keepends=True)
    assert [mirrored[k] for k in sorted(mirrored)] == local
    assert all(k.startswith(f"audit/{i:012d}-") for i, k in enumerate(sorted(mirrored)))


def _append_many(path: str, n: int) -> None:
    log = AuditLog(Path(path))
    for i in range(n):
        log.append("wal-push", segment=f"{i:024X}")


def test_concurrent_processes_keep_one_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    procs = [multiprocessing.Process(target=_append_many, args=(str(path), 25)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    report = verify(path)
    assert report.ok and report.entries == 100
