"""Records of sharded backups: a run's plan, each shard's result, and the commit.

They live beside the snapshots (``records/shards/ASSET/RUN/...``), are written once
(put-if-absent, like everything in the repository) and are sealed with a key derived from
the repository's MAC key: they name object keys and prefixes, which are as secret as the
snapshot trees, yet every worker holding only the backup key must read the plan.
A shard's result is written last, after its data and its part of the tree are stored:
a shard killed midway leaves no result, and its rerun reuses the chunks it uploaded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifeboat.errors import AlreadyExistsError, ConfigError, IntegrityError, NotFoundError
from lifeboat.repo.backup import BackupSession
from lifeboat.repo.format import record_name
from lifeboat.repo.handle import RepoHandle
from lifeboat.repo.model import SnapshotInfo, SnapshotStats

# an uncommitted run's stored shards are kept from prune this long after its plan
PENDING_DAYS = 7
RUN_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
_SEAL_CONTEXT = b"lifeboat/shard-records/v1"


def check_run_id(run: str) -> str:
    """Run ids name Kubernetes Jobs too: lowercase letters, digits and dashes."""
    if not RUN_ID.match(run):
        raise ConfigError(
            f"bad run id {run!r}", hint="use lowercase letters, digits and '-' (at most 41 characters)"
        )
    return run


def _name(asset: str, run: str, leaf: str) -> str:
    return record_name(f"shards/{asset}/{check_run_id(run)}/{leaf}")


def _seal(repo: RepoHandle, name: str, payload: dict[str, Any]) -> bytes:
    nonce = os.urandom(12)
    key = repo.keyring.mac(_SEAL_CONTEXT)[:32]
    return nonce + AESGCM(key).encrypt(nonce, json.dumps(payload, sort_keys=True).encode(), name.encode())


def _open(repo: RepoHandle, name: str, data: bytes) -> dict[str, Any]:
    key = repo.keyring.mac(_SEAL_CONTEXT)[:32]
    try:
        value = json.loads(AESGCM(key).decrypt(data[:12], data[12:], name.encode()))
    except (InvalidTag, ValueError):
        raise IntegrityError(
            f"{name} failed authentication (modified, damaged or another repository)"
        ) from None
    if not isinstance(value, dict):
        raise IntegrityError(f"{name} is damaged")
    return value


def _put(repo: RepoHandle, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Write once; a second writer of the same name gets what the first one wrote."""
    try:
        repo.storage.put(name, _seal(repo, name, payload))
        return payload
    except AlreadyExistsError:
        return _open(repo, name, repo.storage.get(name))


def _get(repo: RepoHandle, name: str) -> dict[str, Any] | None:
    try:
        return _open(repo, name, repo.storage.get(name))
    except NotFoundError:
        return None


def put_plan(repo: RepoHandle, asset: str, run: str, plan: dict[str, Any]) -> None:
    """Records a sharded run's plan (sealed)."""
    repo.ensure_writable()
    name = _name(asset, run, "plan")
    if repo.storage.exists(name):
        raise AlreadyExistsError(
            f"shard run {run} of {asset} already has a plan", hint="choose another run id"
        )
    repo.storage.put(name, _seal(repo, name, plan))


def get_plan(repo: RepoHandle, asset: str, run: str) -> dict[str, Any]:
    """A sharded run's plan (NotFoundError when absent)."""
    plan = _get(repo, _name(asset, run, "plan"))
    if plan is None:
        raise NotFoundError(
            f"no shard run {run} of asset {asset} in the repository",
            hint=f"plan one with 'lifeboat backup {asset} --plan-shards N'",
        )
    return plan


def put_result(repo: RepoHandle, asset: str, run: str, index: int, result: dict[str, Any]) -> dict[str, Any]:
    """Records a shard's result, once (written last: the shard is done)."""
    return _put(repo, _name(asset, run, f"shard-{index:06d}"), result)


def get_result(repo: RepoHandle, asset: str, run: str, index: int) -> dict[str, Any] | None:
    """A shard's result, or None while it is not done."""
    return _get(repo, _name(asset, run, f"shard-{index:06d}"))


def done_shards(repo: RepoHandle, asset: str, run: str) -> set[int]:
    """The indexes of the run's finished shards."""
    prefix = _name(asset, run, "shard-")
    return {int(obj.name[len(prefix) :]) for obj in repo.storage.list(prefix)}


def put_commit(repo: RepoHandle, asset: str, run: str, snapshot_id: str) -> None:
    """Records the snapshot that committed the run."""
    _put(repo, _name(asset, run, "commit"), {"snapshot": snapshot_id})


def get_commit(repo: RepoHandle, asset: str, run: str) -> str | None:
    """The snapshot id that committed the run, or None."""
    done = _get(repo, _name(asset, run, "commit"))
    return str(done["snapshot"]) if done else None


def commit_shards(
    repo: RepoHandle, asset: str, kind: str, results: list[dict[str, Any]], labels: dict[str, str]
) -> SnapshotInfo:
    """One snapshot from the shards' results (in shard order); refuses when a part of a
    shard's tree is no longer stored (a prune ran between the shards and the commit)."""
    with BackupSession(repo, asset=asset, kind=kind, labels=labels, use_parent_cache=False) as session:
        # checked under the session's lock: a prune can no longer start between the two
        index = repo.index(refresh=True)
        lost = [r["index"] for r in results if any(index.get(b) is None for b in r["tree"])]
        if lost:
            raise IntegrityError(
                f"the stored tree of shard(s) {', '.join(map(str, lost))} is gone from the repository",
                hint="rerun those shards under a new run id",
            )
        return session.commit_fragments(
            [list(r["tree"]) for r in results],
            [SnapshotStats(**r["stats"]) for r in results],
            [p for r in results for p in r.get("packs", [])],
        )


def pending_shards(repo: RepoHandle) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``asset/run/shard``, result) of the shards of runs not committed yet and planned in
    the last PENDING_DAYS days: their chunks belong to no snapshot, and a prune between
    the shards and the commit must not delete them."""
    base = record_name("shards/")
    runs: dict[tuple[str, str], set[str]] = {}
    for obj in repo.storage.list(base):
        asset, run, leaf = obj.name[len(base) :].rsplit("/", 2)
        runs.setdefault((asset, run), set()).add(leaf)
    since = datetime.now(UTC) - timedelta(days=PENDING_DAYS)
    for (asset, run), leaves in sorted(runs.items()):
        if "commit" in leaves or "plan" not in leaves:
            continue
        plan = get_plan(repo, asset, run)
        if datetime.fromisoformat(plan["created"]) < since:
            continue
        for leaf in sorted(x for x in leaves if x.startswith("shard-")):
            result = _get(repo, _name(asset, run, leaf))
            if result is not None:
                yield f"{asset}/{run}/{leaf}", result


def shard_entries(repo: RepoHandle, result: dict[str, Any]) -> list[dict[str, Any]]:
    """The tree entries a shard stored (its part of the future snapshot tree)."""
    raw = b"".join(repo.read_blob(blob_id) for blob_id in result["tree"])
    try:
        entries = orjson.loads(b"[" + raw + b"]")
    except ValueError:
        raise IntegrityError("the stored tree of a shard is damaged") from None
    return list(entries)
