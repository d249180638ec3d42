"""The corrective-actions ledger: what failed, evidence link, owner, status.

Kept as JSON (the record) and rendered to Markdown beside it on every change.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from lifeboat.errors import ConfigError


@dataclass
class Action:
    id: str
    title: str
    detail: str
    evidence: str
    owner: str
    source: str
    status: str
    opened: str
    closed: str | None = None
    note: str | None = None


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[Action]:
        if not self.path.exists():
            return []
        return [Action(**a) for a in json.loads(self.path.read_text())]

    def _save(self, actions: list[Action]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps([asdict(a) for a in actions], indent=2) + "\n")
        self.path.with_suffix(".md").write_text(render_markdown(actions))

    def open(self, title: str, detail: str, evidence: str, source: str, owner: str = "unassigned") -> Action:
        actions = self.load()
        for action in actions:
            if action.status == "open" and action.title == title and action.source == source:
                action.detail, action.evidence = detail, evidence  # the same problem again: update
                self._save(actions)
                return action
        action = Action(
            f"CA-{len(actions) + 1:04d}",
            title,
            detail,
            evidence,
            owner,
            source,
            "open",
            datetime.now(UTC).isoformat(timespec="seconds"),
        )
        actions.append(action)
        self._save(actions)
        return action

    def close(self, action_id: str, note: str) -> Action:
        actions = self.load()
        for action in actions:
            if action.id == action_id:
                action.status, action.note = "closed", note
                action.closed = datetime.now(UTC).isoformat(timespec="seconds")
                self._save(actions)
                return action
        raise ConfigError(f"no corrective action {action_id}")


def render_markdown(actions: list[Action]) -> str:
    lines = [
        "# Corrective actions",
        "",
        "Opened by failed drills and missed targets; closed with a note.",
        "",
        "| id | status | title | owner | opened | evidence | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in actions:
        lines.append(
            f"| {a.id} | {a.status} | {a.title} | {a.owner} | {a.opened} | {a.evidence} | {a.note or ''} |"
        )
    return "\n".join(lines) + "\n"
