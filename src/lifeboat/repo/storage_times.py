"""The storage's own write time of a snapshot header: what the time rule (crypto/signed.py
``judge_time``) compares the header's claimed time with, and what authorisation is judged
at (docs/design/trust-model-crypto.md, "Time").

* S3: ``LastModified`` (of the first version, on a versioned bucket) is set by the store, not
  by the writer, so a snapshot claiming to be older than it (beyond the skew) is back-dated.
* A local directory has no such time: file times are the writer's to set (``touch``), so
  the claimed time is all there is and the rule is not applied there.
* ``lifeboat copy`` gives every object it writes a new ``LastModified``. Before it writes
  snapshot headers it stores a copy record (``records/copies/<time>-<random>``, JSON
  ``{"snapshots": {id: source write time or null}}``) and readers of the copy judge those
  snapshots by the source's write time (null: the source had none, the rule is skipped).
  Such a record is unauthenticated (a copy needs no key): whoever can write the
  repository's storage can name its own objects in one, so ``check`` lists how many
  snapshots are judged by copy records, which a primary repository should have none of.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lifeboat import clock
from lifeboat.errors import NotFoundError
from lifeboat.repo.format import record_name
from lifeboat.storage.base import Storage, write_times_trusted

COPY_RECORDS = "copies/"


@dataclass(frozen=True)
class StorageTimes:
    """How a repository's storage dates its snapshot headers."""

    trusted: bool = False  # ObjectStat.mtime is the store's write time (S3 LastModified)
    copied: Mapping[str, float | None] = field(default_factory=dict)  # snapshot id -> source time

    def of(self, snapshot_id: str, mtime: float) -> datetime | None:
        """The write time a writer could not choose for this header, or None (no such time:
        a local directory, or a copy of one)."""
        if snapshot_id in self.copied:
            source = self.copied[snapshot_id]
            # a copy is never older than its source: a record cannot make a header older
            return None if source is None else datetime.fromtimestamp(min(source, mtime), UTC)
        return datetime.fromtimestamp(mtime, UTC) if self.trusted else None


def load_storage_times(storage: Storage) -> StorageTimes:
    """The storage's kind of times and every copy record in it (damaged records are skipped:
    their snapshots are then judged by the copy's own write time, reported as back-dated)."""
    copied: dict[str, float | None] = {}
    for obj in sorted(storage.list(record_name(COPY_RECORDS)), key=lambda o: o.name):
        try:
            snapshots = json.loads(storage.get(obj.name))["snapshots"]
        except (NotFoundError, ValueError, KeyError, TypeError):
            continue
        if not isinstance(snapshots, dict):
            continue
        for snapshot_id, when in snapshots.items():
            valid = when is None or (isinstance(when, int | float) and not isinstance(when, bool))
            if isinstance(snapshot_id, str) and snapshot_id not in copied and valid:
                copied[snapshot_id] = None if when is None else float(when)
    return StorageTimes(write_times_trusted(storage), copied)


def write_copy_record(target: Storage, times: Mapping[str, float | None]) -> None:
    """Store which snapshots a copy is about to write and their source write times (see the
    module docstring); nothing when there are none."""
    if not times:
        return
    stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
    name = record_name(f"{COPY_RECORDS}{stamp}-{secrets.token_hex(8)}")
    target.put(name, json.dumps({"snapshots": dict(times)}, sort_keys=True).encode())
