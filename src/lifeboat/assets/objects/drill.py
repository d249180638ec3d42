"""The objects kind's part of a drill: each key's version at the reference time, and the
achieved RPO (the versions the source had that the restored snapshot lacks)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from lifeboat.assets.rpo import Rpo, seconds_between, upper_bound

if TYPE_CHECKING:
    from lifeboat.assets.objects.info import ObjectInfo
    from lifeboat.repo import Entry


def state_at(versions: list[ObjectInfo], when: datetime) -> dict[str, ObjectInfo]:
    """Each key's newest version at ``when``, deleted keys left out."""
    state: dict[str, ObjectInfo] = {}
    for obj in sorted(versions, key=lambda o: o.last_modified):
        if obj.last_modified <= when:
            state[obj.key] = obj
    return {k: o for k, o in state.items() if not o.is_delete_marker}


def objects_rpo(
    reference: datetime,
    source_state: object,
    entries: list[Entry],
    recovered: datetime | None,
) -> Rpo:
    """``source_state``: key -> ObjectInfo at the reference time (or Unavailable)."""
    if not isinstance(source_state, dict):
        return upper_bound(reference, recovered, getattr(source_state, "error", "no source state"))
    held = {e.path: e.meta for e in entries if e.type == "file"}
    missing = []
    for key, obj in source_state.items():
        meta = held.get(key)
        same = meta is not None and (
            (obj.version_id and meta.get("version_id") == obj.version_id) or meta.get("etag") == obj.etag
        )
        if not same:
            missing.append(obj.last_modified)
    if not missing:
        return Rpo(
            0.0, f"all {len(source_state)} object versions on the source are in the restore: nothing lost"
        )
    oldest = min(missing)
    return Rpo(
        seconds_between(reference, oldest),
        f"{len(missing)} of {len(source_state)} object versions the source had are not in the restore "
        f"(oldest change {oldest.isoformat(timespec='seconds')}): reference time minus the oldest",
    )
