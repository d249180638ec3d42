"""Named refs (``refs/<namespace>/<name>``): streams stored once outside snapshots (WAL
segments, escrow records), their stored form, reading and deleting them."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from lifeboat.errors import AlreadyExistsError, IntegrityError, LockedError, NotFoundError
from lifeboat.progress import NO_PROGRESS
from lifeboat.repo.format import REF_MAGIC, decode_framed, encode_framed, ref_name
from lifeboat.repo.keyring import Keyring
from lifeboat.repo.locks import RepoLock
from lifeboat.repo.model import RefInfo

if TYPE_CHECKING:
    from lifeboat.repo.handle import RepoHandle


def decode_ref(keyring: Keyring, name: str, data: bytes) -> RefInfo:
    """The ref stored under object ``name``, authenticated with the repository's MAC key."""
    p = decode_framed(REF_MAGIC, data, keyring.mac, f"ref {name}")
    try:
        return RefInfo(
            namespace=p["namespace"],
            name=p["name"],
            size=int(p["size"]),
            digest=p["digest"],
            chunks=list(p["chunks"]),
            time=datetime.fromisoformat(p["time"]),
            labels=dict(p.get("labels", {})),
        )
    except (KeyError, TypeError, ValueError):
        raise IntegrityError(f"ref {name} is damaged") from None


def encode_ref(keyring: Keyring, info: RefInfo) -> bytes:
    """The bytes stored for ``info`` (framed, MAC'd; read back by ``decode_ref``)."""
    payload: dict[str, Any] = {
        "namespace": info.namespace,
        "name": info.name,
        "size": info.size,
        "digest": info.digest,
        "chunks": info.chunks,
        "time": info.time.isoformat(),
        "labels": info.labels,
    }
    return encode_framed(REF_MAGIC, payload, keyring.mac)


def get_ref(repo: RepoHandle, namespace: str, name: str) -> RefInfo:
    """The named ref (NotFoundError when absent)."""
    object_name = ref_name(namespace, name)
    return decode_ref(repo.keyring, object_name, repo.storage.get(object_name))


def list_refs(repo: RepoHandle, namespace: str) -> list[RefInfo]:
    """Every ref in ``namespace``, by name."""
    prefix = f"refs/{namespace}/"
    refs = []
    for obj in repo.storage.list(prefix):
        try:
            refs.append(decode_ref(repo.keyring, obj.name, repo.storage.get(obj.name)))
        except NotFoundError:
            continue
    return sorted(refs, key=lambda r: r.name)


def list_ref_names(repo: RepoHandle, namespace: str) -> list[str]:
    """The names of the refs in ``namespace`` (no ref is read)."""
    prefix = f"refs/{namespace}/"
    return sorted(obj.name[len(prefix) :] for obj in repo.storage.list(prefix))


def put_ref(
    repo: RepoHandle,
    namespace: str,
    name: str,
    data: bytes | BinaryIO,
    labels: dict[str, str] | None = None,
    chunk_size: int | None = None,
) -> RefInfo:
    """Store a named stream once. Same content again: no-op; different: AlreadyExistsError.

    Refs are meant for objects that fit in memory (WAL segments, records of a few MiB).
    """
    content = data if isinstance(data, bytes) else data.read()
    digest = repo.keyring.digest()
    digest.update(content)
    info = RefInfo(
        namespace,
        name,
        len(content),
        digest.hexdigest(),
        [],
        datetime.now(UTC),
        {str(k): str(v) for k, v in (labels or {}).items()},
    )
    existing = _existing_ref(repo, namespace, name)
    if existing is not None:
        return _same_or_conflict(existing, info)
    repo.ensure_writable()
    object_name = ref_name(namespace, name)
    from lifeboat.repo.backup import BlobWriter  # here: reading refs (wal fetch) needs no writer

    with RepoLock(repo.storage, exclusive=False, operation=f"put {namespace}/{name}"):
        writer = BlobWriter(repo, None, workers=repo.workers)
        try:
            info.chunks, _, _ = writer.store_stream(
                io.BytesIO(content), chunk_size or repo.chunk_size, NO_PROGRESS, sha256=False
            )
            writer.finish()
        finally:
            writer.close()
        try:
            repo.storage.put(object_name, encode_ref(repo.keyring, info))
        except AlreadyExistsError:
            return _same_or_conflict(get_ref(repo, namespace, name), info)
        return info


def _existing_ref(repo: RepoHandle, namespace: str, name: str) -> RefInfo | None:
    try:
        return get_ref(repo, namespace, name)
    except NotFoundError:
        return None


def _same_or_conflict(existing: RefInfo, new: RefInfo) -> RefInfo:
    if existing.digest == new.digest and existing.size == new.size:
        return existing
    raise AlreadyExistsError(
        f"{existing.namespace}/{existing.name} is already stored with different content",
        hint="the repository never overwrites; investigate why the same name carries other bytes",
        exit_code=1,
    )


def iter_ref(repo: RepoHandle, ref: RefInfo) -> Iterator[bytes]:
    """The ref's content chunk by chunk; the whole-content digest is checked at the end."""
    digest = repo.keyring.digest()
    for chunk_id in ref.chunks:
        data = repo.read_blob(chunk_id)
        digest.update(data)
        yield data
    if digest.hexdigest() != ref.digest:
        raise IntegrityError(f"{ref.namespace}/{ref.name} does not match its recorded digest")


def read_ref(repo: RepoHandle, ref: RefInfo) -> bytes:
    """A ref's whole content, verified (needs the recovery key)."""
    data = b"".join(repo.read_blob(c) for c in ref.chunks)
    digest = repo.keyring.digest()
    digest.update(data)
    if digest.hexdigest() != ref.digest:
        raise IntegrityError(f"{ref.namespace}/{ref.name} does not match its recorded digest")
    return data


def delete_ref(repo: RepoHandle, namespace: str, name: str) -> None:
    """Deletes a ref (its chunks go at the next prune)."""
    repo.storage.delete(ref_name(namespace, name))


def forget_refs(repo: RepoHandle, namespace: str, names: list[str]) -> tuple[list[str], list[str]]:
    """Delete refs under the exclusive lock (as forget does); their chunks go at the next
    prune. Returns (removed, kept because Object Lock protects them)."""
    removed: list[str] = []
    locked: list[str] = []
    with RepoLock(repo.storage, exclusive=True, operation="forget refs"):
        for name in names:
            try:
                delete_ref(repo, namespace, name)
                removed.append(name)
            except LockedError:
                locked.append(name)
    return removed, locked
