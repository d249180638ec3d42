"""Named refs (``refs/<namespace>/<name>``): streams stored once outside snapshots (WAL
segments, history files, probes), their stored form, writing, reading and deleting them.

Stored form, in a repository with writer identities::

    object = "LBRF" ‖ u8(2) ‖ u16 len(public) ‖ public ‖ sealed ‖ trailer
    public = canonical JSON of namespace, name, digest, time
    sealed = crypto/metadata.py seal of repo/sealed.py's inner plaintext ("LBRF" ‖ u8(2) ‖
             zstd(JSON of size, chunks, labels)), for the writer and the recovery side, bound
             to ``refs/<namespace>/<name>`` and the signer
    trailer = the writer's 101-byte signature (crypto/signed.py) of the statement for
             ``refs/<namespace>/<name>`` (type ``wal`` under ``wal/`` and ``wal-stream/``,
             ``ref`` otherwise), the namespace's asset (``<kind>/<asset>``) and everything before

Every reader judges a ref from its clear fields and trailer; only its writer and the
recovery side read its size, chunk ids and labels. A legacy repository (no writer
identities) stores MAC'd framed JSON (``"LBRF" ‖ u8(1) ‖ mac ‖ zstd(json)``), still read
everywhere. Readers accept a ref only when its signature chains to the writer registry and
its writer may write the asset (``judge_ref``); anything else is ignored and reported
(repo/ref_listing.py).

A name can hold an unauthorised object (a compromised host with storage credentials planting
future WAL names). A push that finds one stores the genuine ref side by side, under
``<name>~<16 random hex>``, and succeeds; readers look at ``<name>`` and its side-by-side
copies and keep the authorised one. Two authorised objects with different content under one
name are a real conflict and fail loudly, naming both writers.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from lifeboat import clock
from lifeboat.crypto.signed import (
    SIGNATURE_MAGIC,
    SIGNATURE_SIZE,
    ObjectType,
    Signature,
    candidates_of,
    side_by_side_name,
)
from lifeboat.errors import AlreadyExistsError, IntegrityError, KeyError_, LockedError, NotFoundError
from lifeboat.progress import NO_PROGRESS
from lifeboat.repo.format import REF_MAGIC, canonical_json, decode_framed, encode_framed, ref_name
from lifeboat.repo.keyring import Keyring
from lifeboat.repo.locks import RepoLock
from lifeboat.repo.model import RefInfo
from lifeboat.repo.sealed import MetadataCodec, inner_plaintext, payload_of_inner
from lifeboat.repo.trust import SignatureCheck, Trust, Verdict, check_signature

if TYPE_CHECKING:
    from lifeboat.repo.handle import RepoHandle

WAL_NAMESPACES = ("wal", "wal-stream")
SEALED_REF_PREFIX = REF_MAGIC + bytes([2])
# In clear in a sealed ref: what every reader needs to judge it (the signer's standing at its
# time) and to tell one more push of the same content from a conflict (the digest is keyed
# with the repository's key, which the storage provider does not hold).
PUBLIC_FIELDS = ("namespace", "name", "digest", "time")
UNOPENED_FIELDS: dict[str, Any] = {"size": 0, "chunks": [], "labels": {}}  # and the sealed ones
SIDE_BY_SIDE_TRIES = 4


def ref_asset(namespace: str) -> str | None:
    """The asset a namespace (``<kind>/<asset>``) belongs to (None: no single asset)."""
    return namespace.split("/", 1)[1] if "/" in namespace else None


def ref_type(namespace: str) -> ObjectType:
    """What a ref's signature is made for: WAL files, or any other ref."""
    return ObjectType.WAL if namespace.split("/", 1)[0] in WAL_NAMESPACES else ObjectType.REF


def logical_name(object_name: str) -> tuple[str, str]:
    """(namespace, name) an object under ``refs/`` holds a version of: a side-by-side copy
    ``<name>~<16 hex>`` holds ``<name>`` (IntegrityError for a name outside any namespace)."""
    rest = object_name.removeprefix("refs/")
    if "/" not in rest:
        raise IntegrityError(f"{object_name} is not a ref name")
    namespace, name = rest.rsplit("/", 1)
    base = name.split("~", 1)[0]
    if base != name and candidates_of(base, [name]) != [name]:
        base = name
    return namespace, base


def _split_trailer(data: bytes) -> tuple[bytes, bytes | None]:
    if len(data) > SIGNATURE_SIZE and data[-SIGNATURE_SIZE:].startswith(SIGNATURE_MAGIC):
        return data[:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:]
    return data, None


def _info_of(p: dict[str, Any], object_name: str, opened: bool = True) -> RefInfo:
    try:
        info = RefInfo(
            namespace=str(p["namespace"]),
            name=str(p["name"]),
            size=int(p["size"]),
            digest=str(p["digest"]),
            chunks=[str(c) for c in p["chunks"]],
            time=datetime.fromisoformat(str(p["time"])),
            labels={str(k): str(v) for k, v in p.get("labels", {}).items()},
            opened=opened,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise IntegrityError(f"ref {object_name} is damaged") from None
    if info.time.tzinfo is None:
        raise IntegrityError(f"ref {object_name} is damaged (time without a zone)")
    return info


def _public_part(body: bytes, object_name: str) -> tuple[dict[str, Any], bytes]:
    """The clear fields of a sealed ref and its sealed bytes."""
    if len(body) < len(SEALED_REF_PREFIX) + 2:
        raise IntegrityError(f"ref {object_name} is damaged (truncated)")
    start = len(SEALED_REF_PREFIX) + 2
    (length,) = struct.unpack(">H", body[len(SEALED_REF_PREFIX) : start])
    try:
        public = orjson.loads(body[start : start + length])
    except orjson.JSONDecodeError:
        raise IntegrityError(f"ref {object_name} is damaged") from None
    if not isinstance(public, dict) or set(public) != set(PUBLIC_FIELDS):
        raise IntegrityError(f"ref {object_name} is damaged")
    return public, body[start + length :]


def _decode_sealed(
    codec: MetadataCodec, object_name: str, body: bytes, trailer: bytes | None
) -> tuple[RefInfo, SignatureCheck]:
    """A sealed ref: its clear fields always, the sealed ones when this handle holds a key
    for them and the signature verifies (nothing is decrypted for a forged trailer; the
    registry judges the signer afterwards, as for snapshot headers)."""
    namespace, name = logical_name(object_name)
    public, sealed = _public_part(body, object_name)
    _same_name(object_name, str(public["namespace"]), str(public["name"]), namespace, name)
    check = check_signature(
        codec.repo_id, ref_type(namespace), ref_name(namespace, name), ref_asset(namespace), body, trailer
    )
    plaintext = None
    if check.refusal is None and check.signer is not None:
        try:
            plaintext = codec.open_named(ref_name(namespace, name), check.signer, sealed)
        except IntegrityError:
            raise IntegrityError(
                f"ref {object_name} does not open: modified, or sealed by another key than its signer's"
            ) from None
    if plaintext is None:
        return _info_of({**public, **UNOPENED_FIELDS}, object_name, opened=False), check
    private = payload_of_inner(REF_MAGIC, plaintext, f"ref {object_name}")
    if set(private) != set(UNOPENED_FIELDS):
        raise IntegrityError(f"ref {object_name} is damaged")
    return _info_of({**public, **private}, object_name), check


def _same_name(object_name: str, held_ns: str, held_name: str, namespace: str, name: str) -> None:
    if (held_ns, held_name) != (namespace, name):
        raise IntegrityError(f"ref {object_name} holds {held_ns}/{held_name} (stored under another name)")


def decode_signed_ref(repo: RepoHandle, object_name: str, data: bytes) -> tuple[RefInfo, SignatureCheck]:
    """The ref stored under ``object_name`` (authenticated, stored under its own name) and
    what its signature trailer proves (IntegrityError when damaged). Another writer's sealed
    ref gives its clear fields only (``opened`` False)."""
    namespace, name = logical_name(object_name)
    body, trailer = _split_trailer(data)
    if body.startswith(SEALED_REF_PREFIX):
        return _decode_sealed(repo.metadata, object_name, body, trailer)
    try:
        p = decode_framed(REF_MAGIC, body, repo.keyring.mac, f"ref {object_name}")
    except IntegrityError:
        if trailer is None:
            raise
        body, trailer = data, None  # an unsigned ref whose last bytes happen to look like one
        p = decode_framed(REF_MAGIC, body, repo.keyring.mac, f"ref {object_name}")
    info = _info_of(p, object_name)
    _same_name(object_name, info.namespace, info.name, namespace, name)
    check = check_signature(
        repo.keyring.repo_id,
        ref_type(namespace),
        ref_name(namespace, name),
        ref_asset(namespace),
        body,
        trailer,
    )
    return info, check


def ref_payload(info: RefInfo) -> dict[str, Any]:
    """The JSON fields of a ref (stored, and kept in the verified-ref cache)."""
    return {
        "namespace": info.namespace,
        "name": info.name,
        "size": info.size,
        "digest": info.digest,
        "chunks": info.chunks,
        "time": info.time.isoformat(),
        "labels": info.labels,
    }


def encode_ref(keyring: Keyring, codec: MetadataCodec, info: RefInfo) -> bytes:
    """The body stored for ``info`` (the signature trailer follows it): sealed, with only
    ``PUBLIC_FIELDS`` in clear; MAC'd plaintext in a legacy repository."""
    payload = ref_payload(info)
    if not codec.seal:
        return encode_framed(REF_MAGIC, payload, keyring.mac)
    public = canonical_json({k: payload[k] for k in PUBLIC_FIELDS})
    private = inner_plaintext(REF_MAGIC, {k: payload[k] for k in UNOPENED_FIELDS})
    sealed = codec.seal_named(ref_name(info.namespace, info.name), private)
    return SEALED_REF_PREFIX + struct.pack(">H", len(public)) + public + sealed


def judge_ref(trust: Trust | None, info: RefInfo, check: SignatureCheck) -> Verdict:
    """May a reader use this ref? In a legacy repository (no registry) every ref is used."""
    if trust is None:
        return Verdict(None)
    return trust.judge(check, ref_asset(info.namespace), info.time)


@dataclass(frozen=True)
class StoredRef:
    """One object stored for a ref name (the name itself or a side-by-side copy), judged."""

    object_name: str
    info: RefInfo | None  # None: damaged beyond reading
    verdict: Verdict

    @property
    def asset(self) -> str | None:
        """The asset whose namespace holds the object."""
        try:
            return ref_asset(logical_name(self.object_name)[0])
        except IntegrityError:
            return None

    def describe(self) -> str:
        """One line for ``check``, ``status`` and a squatted push: who wrote it and why not."""
        who = self.verdict.writer or "an unknown writer"
        if self.verdict.reason == "signature does not match" and self.verdict.writer:
            who = f"a writer claiming to be {self.verdict.writer}"
        return f"ref {self.object_name.removeprefix('refs/')} by {who} refused: {self.verdict.reason}"


def read_stored(repo: RepoHandle, trust: Trust | None, object_name: str) -> StoredRef | None:
    """The object judged (None when absent). A damaged one is refused like a forged one."""
    try:
        data = repo.storage.get(object_name)
    except NotFoundError:
        return None
    return judge_stored(repo, trust, object_name, data)


def judge_stored(repo: RepoHandle, trust: Trust | None, object_name: str, data: bytes) -> StoredRef:
    """The object's bytes decoded and judged."""
    try:
        info, check = decode_signed_ref(repo, object_name, data)
    except IntegrityError as exc:
        return StoredRef(object_name, None, Verdict(None, f"damaged ({exc})"))
    return StoredRef(object_name, info, judge_ref(trust, info, check))


def side_by_side(repo: RepoHandle, namespace: str, name: str) -> list[str]:
    """The storage names of ``name``'s side-by-side copies."""
    prefix = ref_name(namespace, name)
    listed = [obj.name for obj in repo.storage.list(prefix)]
    return [n for n in candidates_of(prefix, listed) if n != prefix]


def choose(namespace: str, name: str, stored: list[StoredRef]) -> StoredRef | None:
    """The authorised version among the objects stored for one name; IntegrityError when
    authorised writers stored different content under it."""
    authorised = [s for s in stored if s.verdict and s.info is not None]
    contents = {s.info.digest for s in authorised if s.info is not None}
    if len(contents) > 1:
        writers = ", ".join(sorted({s.verdict.writer or "legacy" for s in authorised}))
        raise IntegrityError(
            f"{namespace}/{name} was stored twice with different content by authorised writers ({writers})"
        )
    # equal content: the copy this handle can open (its own) serves readers best
    authorised.sort(key=lambda s: not (s.info is not None and s.info.opened))
    return authorised[0] if authorised else None


def get_ref(repo: RepoHandle, namespace: str, name: str) -> RefInfo:
    """The authorised ref (NotFoundError when absent, or when only unauthorised objects hold
    its name). One GET when the name holds the genuine ref; a listing only when it does not."""
    trust = repo.trust()
    first = read_stored(repo, trust, ref_name(namespace, name))
    if first is None:
        raise NotFoundError(f"{namespace}/{name} is not in the repository")
    if first.verdict and first.info is not None:
        return first.info
    stored = [first] + [s for n in side_by_side(repo, namespace, name) if (s := read_stored(repo, trust, n))]
    chosen = choose(namespace, name, stored)
    if chosen is None or chosen.info is None:
        raise NotFoundError(f"{namespace}/{name} has no authorised copy: {first.describe()}")
    return chosen.info


def put_ref(
    repo: RepoHandle,
    namespace: str,
    name: str,
    data: bytes | BinaryIO,
    labels: dict[str, str] | None = None,
    chunk_size: int | None = None,
) -> RefInfo:
    """Store a named stream once and sign it. Same content again: no-op; an unauthorised
    object under the name: stored side by side (``squatters`` names it); different content
    by an authorised writer: AlreadyExistsError naming both writers.

    Refs are meant for objects that fit in memory (WAL segments, records of a few MiB).
    """
    asset = ref_asset(namespace)
    if asset is not None:
        # refused now, as a backup is, rather than stored where every reader ignores it: an
        # archive_command that "succeeds" lets PostgreSQL delete a segment no restore can use
        repo.require_writer_for(asset)
    content = data if isinstance(data, bytes) else data.read()
    digest = repo.keyring.digest()
    digest.update(content)
    info = RefInfo(
        namespace,
        name,
        len(content),
        digest.hexdigest(),
        [],
        clock.now(),
        {str(k): str(v) for k, v in (labels or {}).items()},
    )
    object_name = ref_name(namespace, name)
    try:
        existing = repo.storage.get(object_name)
    except NotFoundError:
        existing = None
    if existing is None:
        stored = _store(repo, info, content, chunk_size, [object_name])
        if stored is not None:
            return stored
    return _squatted(repo, info, content, chunk_size)


def _squatted(repo: RepoHandle, info: RefInfo, content: bytes, chunk_size: int | None) -> RefInfo:
    """The name is taken: idempotent, a conflict, or a squatter to store beside."""
    trust = repo.trust()
    namespace, name = info.namespace, info.name
    first = read_stored(repo, trust, ref_name(namespace, name))
    stored = [first] if first is not None else []
    if trust is not None:
        stored += [s for n in side_by_side(repo, namespace, name) if (s := read_stored(repo, trust, n))]
    genuine = [s for s in stored if s.verdict and s.info is not None]
    for s in genuine:
        assert s.info is not None
        if s.info.digest != info.digest:  # keyed hash of the whole content: size included
            raise AlreadyExistsError(
                f"{namespace}/{name} is already stored with different content by "
                f"{_writer(s.verdict, trust)} (this push: {_own_writer(repo)})",
                hint="the repository never overwrites; investigate why the same name carries other bytes",
                exit_code=1,
            )
    squatters = [s.describe() for s in stored if not (s.verdict and s.info is not None)]
    if genuine:
        genuine.sort(key=lambda s: not (s.info is not None and s.info.opened))
        found = genuine[0].info
        assert found is not None
        if not found.opened:  # another writer's: the same content, so its size and labels are ours
            found.size, found.labels = info.size, info.labels
        found.squatters = squatters
        return found
    if first is None:  # vanished meanwhile (an expiry): store under the name itself
        return put_ref(repo, namespace, name, content, info.labels, chunk_size)
    if trust is None:  # a legacy repository has no writers to tell squatters from
        raise IntegrityError(f"{namespace}/{name} is damaged: {first.describe()}")
    names = [side_by_side_name(ref_name(namespace, name)) for _ in range(SIDE_BY_SIDE_TRIES)]
    result = _store(repo, info, content, chunk_size, names)
    if result is None:
        raise AlreadyExistsError(f"{namespace}/{name}: every side-by-side name drawn was taken", exit_code=1)
    result.squatters = squatters
    return result


def _store(
    repo: RepoHandle, info: RefInfo, content: bytes, chunk_size: int | None, object_names: list[str]
) -> RefInfo | None:
    """Chunks stored, then the signed ref under the first free name (None: all taken)."""
    repo.ensure_writable()
    from lifeboat.repo.backup import BlobWriter  # here: reading refs (wal fetch) needs no writer

    with RepoLock(repo.storage, exclusive=False, operation=f"put {info.namespace}/{info.name}"):
        writer = BlobWriter(repo, None, workers=repo.workers)
        try:
            info.chunks, _, _ = writer.store_stream(
                io.BytesIO(content), chunk_size or repo.chunk_size, NO_PROGRESS, sha256=False
            )
            writer.finish()
        finally:
            writer.close()
        body = encode_ref(repo.keyring, repo.metadata, info)
        signed = body + repo.sign_object(
            ref_type(info.namespace), ref_name(info.namespace, info.name), ref_asset(info.namespace), body
        )
        for object_name in object_names:
            try:
                repo.storage.put(object_name, signed)
                return info
            except AlreadyExistsError:
                continue
    return None


def _writer(verdict: Verdict, trust: Trust | None) -> str:
    if trust is None:
        return "another push"
    return f"writer {verdict.writer}" if verdict.writer else "an unknown writer"


def _own_writer(repo: RepoHandle) -> str:
    trust = repo.trust()
    trailer = repo.sign_object(ObjectType.REF, "", None, b"")
    name = trust.writer_name(Signature.from_bytes(trailer).public) if trust is not None and trailer else None
    return f"writer {name}" if name else "this key"


def _require_opened(ref: RefInfo) -> None:
    if not ref.opened:
        raise KeyError_(
            f"{ref.namespace}/{ref.name} is sealed by another writer",
            hint="read it with the recovery key (--recovery-key or shares)",
        )


def iter_ref(repo: RepoHandle, ref: RefInfo) -> Iterator[bytes]:
    """The ref's content chunk by chunk; the whole-content digest is checked at the end."""
    _require_opened(ref)
    digest = repo.keyring.digest()
    for chunk_id in ref.chunks:
        data = repo.read_blob(chunk_id)
        digest.update(data)
        yield data
    if digest.hexdigest() != ref.digest:
        raise IntegrityError(f"{ref.namespace}/{ref.name} does not match its recorded digest")


def read_ref(repo: RepoHandle, ref: RefInfo) -> bytes:
    """A ref's whole content, verified (needs the recovery key)."""
    _require_opened(ref)
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
    """Delete refs, with their side-by-side copies, under the exclusive lock (as forget
    does); their chunks go at the next prune. Returns (removed, kept because Object Lock
    protects them)."""
    removed: list[str] = []
    locked: list[str] = []
    wanted = set(names)
    copies: dict[str, list[str]] = {}
    for obj in repo.storage.list(f"refs/{namespace}/"):
        try:
            _, name = logical_name(obj.name)
        except IntegrityError:
            continue
        if name in wanted and obj.name != ref_name(namespace, name):
            copies.setdefault(name, []).append(obj.name)
    with RepoLock(repo.storage, exclusive=True, operation="forget refs"):
        for name in names:
            try:
                for object_name in [ref_name(namespace, name), *copies.get(name, [])]:
                    try:
                        repo.storage.delete(object_name)
                    except NotFoundError:
                        continue
                removed.append(name)
            except LockedError:
                locked.append(name)
    return removed, locked
