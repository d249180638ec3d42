"""The corrective-actions ledger: what failed, evidence link, owner, status, due date.

Kept as JSON (the record) and rendered to Markdown beside it on every change. An open
action is overdue once its due date has passed: by default one drill period (the asset's
class ``drill_every``) after it was opened, i.e. before the next scheduled drill would
have to prove the fix. Actions recorded before due dates existed get the same rule.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lifeboat.errors import ConfigError


@dataclass
class Action:
    """A corrective action opened by a failed drill or check."""

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
    asset: str | None = None  # the asset the failure was about, when known
    due: str | None = None  # ISO time; None in ledgers written before due dates

    def due_time(self, default_period: timedelta) -> datetime:
        """When the action is due."""
        if self.due:
            return datetime.fromisoformat(self.due)
        return datetime.fromisoformat(self.opened) + default_period

    def overdue(self, now: datetime, default_period: timedelta) -> bool:
        """Whether the action is open past its due time."""
        return self.status == "open" and now > self.due_time(default_period)


class Ledger:
    """The corrective-action ledger (a JSON file in the operations docs)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[Action]:
        """The actions recorded so far."""
        if not self.path.exists():
            return []
        fields = set(Action.__dataclass_fields__)
        try:
            records = json.loads(self.path.read_text())
            return [Action(**{k: v for k, v in a.items() if k in fields}) for a in records]
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{self.path}: not a corrective-actions ledger ({str(exc).splitlines()[0]})",
                hint="restore it from version control; it is a JSON list of actions",
            ) from None

    def _save(self, actions: list[Action]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps([asdict(a) for a in actions], indent=2) + "\n")
        self.path.with_suffix(".md").write_text(render_markdown(actions))

    def open(
        self,
        title: str,
        detail: str,
        evidence: str,
        source: str,
        owner: str = "unassigned",
        *,
        asset: str | None = None,
        due_in: timedelta | None = None,
    ) -> Action:
        """Open an action (or refresh the open one with the same title)."""
        actions = self.load()
        for action in actions:
            if action.status == "open" and action.title == title and action.source == source:
                # the same problem again: update it; the due date stays (failing again is no extension)
                action.detail, action.evidence = detail, evidence
                self._save(actions)
                return action
        opened = datetime.now(UTC).replace(microsecond=0)
        action = Action(
            f"CA-{len(actions) + 1:04d}",
            title,
            detail,
            evidence,
            owner,
            source,
            "open",
            opened.isoformat(),
            asset=asset,
            due=(opened + due_in).isoformat() if due_in is not None else None,
        )
        actions.append(action)
        self._save(actions)
        return action

    def close(self, action_id: str, note: str) -> Action:
        """Close an action with a note."""
        actions = self.load()
        for action in actions:
            if action.id == action_id:
                action.status, action.note = "closed", note
                action.closed = datetime.now(UTC).isoformat(timespec="seconds")
                self._save(actions)
                return action
        raise ConfigError(f"no corrective action {action_id}")


def render_markdown(actions: list[Action]) -> str:
    """The ledger as a Markdown table."""
    lines = [
        "# Corrective actions",
        "",
        "Opened by failed drills and missed targets; closed with a note.",
        "",
        "| id | status | title | owner | opened | due | evidence | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in actions:
        lines.append(
            f"| {a.id} | {a.status} | {a.title} | {a.owner} | {a.opened} | {a.due or '-'} "
            f"| {a.evidence} | {a.note or ''} |"
        )
    return "\n".join(lines) + "\n"


def ledger_at(base_dir: Path) -> Ledger:
    """The corrective-action ledger beside the policy file in ``base_dir``."""
    return Ledger(base_dir / "docs" / "operations" / "corrective-actions.json")


DEFAULT_OPEN_PERIOD = timedelta(days=30)  # an action whose asset and drill are both gone


def open_period(class_period: timedelta | None, drill_period: timedelta | None) -> timedelta:
    """How long a corrective action may stay open: the drill period of its asset's data
    class, else its drill's own period; the next drill is where the fix has to show."""
    if class_period is not None:
        return class_period
    return drill_period if drill_period is not None else DEFAULT_OPEN_PERIOD
