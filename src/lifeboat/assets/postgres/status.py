"""What `status` adds for a PostgreSQL asset: bad pages in the latest base backup, WAL
archived and streamed since it, divergent timelines, and a failing archiver."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lifeboat.assets.kind import StatusExtras, StatusQuery
from lifeboat.errors import LifeboatError

if TYPE_CHECKING:
    from lifeboat.repo import Repository, SnapshotInfo


def status_extras(query: StatusQuery) -> StatusExtras:
    """The asset's breaches (in the order status reports them) and its newest WAL time."""
    name, repo = query.name, query.repo
    extras = StatusExtras()
    if query.snapshots:
        _page_verdict(extras, query.snapshots[-1])
    newest: datetime | None = None
    wal = [
        e
        for e in query.audit
        if e["operation"] == "wal-push" and e.get("asset") == name and e["outcome"] == "ok"
    ]
    if wal:
        newest = datetime.fromisoformat(wal[-1]["time"])
    extras.divergent, archived = wal_tree_findings(repo, name)
    # the archive itself, not this host's audit log: a fleet's status host sees the WAL
    # every other host pushed
    if archived is not None:
        newest = max(newest, archived) if newest else archived
    _archiver_verdict(extras, query.probed)
    for d in extras.divergent:
        extras.breaches.append(
            f"divergent WAL branch: timeline {d['timeline']} forked from {d['parent']} at "
            f"{d['fork_lsn'] or '?'} and both archived; newest WAL on timeline {d['newest_wal_on']}"
        )
    if query.settings.get("stream"):
        streamed = newest_streamed(repo, name)
        if streamed is not None:
            newest = max(newest, streamed) if newest else streamed
    extras.newest = newest
    return extras


@dataclass(frozen=True)
class ArchiverAnswer:
    """What a server said of its archiver: ``failure``, or None when archiving works."""

    failure: str | None


def archiver_probe(dsn: str) -> ArchiverAnswer | None:
    """``configure.archive_failure`` as status and the daemon ask it: they go on whatever the
    server does, so a query refused (a role without pg_stat_archiver) or a connection lost
    after connecting (a failover) is no verdict (None), as an unreachable server is. `pg
    configure` and `policy check` call ``archive_failure`` itself. psycopg is imported
    here, not with the module: one-shot `status` asks in a child process, and the parent
    never needs it (``AssetKind.status_probe_imports``)."""
    from lifeboat.assets.postgres.configure import archive_failure_on
    from lifeboat.assets.postgres.connection import connect

    try:
        return ArchiverAnswer(archive_failure_on(connect(dsn)))
    except LifeboatError:
        return None


def _archiver_verdict(extras: StatusExtras, probed: object) -> None:
    """A server whose archive_command fails loses its point-in-time recovery silently:
    the audit log only records the pushes that worked. ``probed``: what the kind's status
    probe found; anything but an answer (none in time, none given) is no verdict, and the
    daemon then leaves an archiver alert as it is rather than resolve it."""
    extras.archiver_answered = isinstance(probed, ArchiverAnswer)
    if not isinstance(probed, ArchiverAnswer):
        return
    extras.archive_failure = probed.failure
    if extras.archive_failure is not None:
        extras.breaches.append(extras.archive_failure)


def _page_verdict(extras: StatusExtras, latest: SnapshotInfo) -> None:
    """Degraded while the latest snapshot holds pages that failed their checksum: every
    backup taken since the corruption carries it, so an older snapshot may be the good one."""
    try:
        extras.bad_pages = int(latest.labels["bad_pages"])
    except (KeyError, ValueError):
        return
    if extras.bad_pages:
        where = latest.labels.get("bad_page_blocks", "")
        detail = f" ({where})" if where else ""
        extras.breaches.append(
            f"degraded: {extras.bad_pages} bad page(s) in snapshot {latest.short_id}{detail}"
        )


def wal_tree_findings(repo: Repository, asset: str) -> tuple[list[dict[str, Any]], datetime | None]:
    """Timelines whose parent kept archiving after they forked (see timelines.py), and when
    the newest WAL file reached the archive."""
    from lifeboat.assets.postgres.timelines import build_tree
    from lifeboat.assets.postgres.wal import namespace

    try:
        tree = build_tree(repo, namespace(asset))
    except LifeboatError:
        return [], None
    if not tree.timelines:
        return [], None
    return [d.__dict__ for d in tree.divergences()], tree.newest().newest_time


def newest_streamed(repo: Repository, asset: str) -> datetime | None:
    """When the newest streamed (not yet archived) WAL arrived."""
    from lifeboat.assets.postgres.stream import newest_stream_time, stream_namespace

    stamp = newest_stream_time(repo.list_ref_names(stream_namespace(asset)))
    return datetime.fromtimestamp(stamp, UTC) if stamp is not None else None
