"""Repacking during prune: the live blobs of small or mostly unused packs into new packs.

Each small backup leaves a couple of packs far below the pack size, and forgetting
snapshots leaves packs whose blobs are partly garbage; prune deletes only packs that are
entirely unused. Like restic's ``prune --repack-small --max-unused``, prune also rewrites:

* small packs (below a quarter of the pack size) once there are ``SMALL_PACKS_MIN`` of
  them, or at least two with ``repack_small``;
* the most wasteful partly used packs, until the unused bytes left in kept packs are at
  most ``max_unused`` of the used bytes (5% by default; None leaves them).

The blobs still needed are copied as they are (their encrypted payloads are opened,
checked against their ids and sealed again under the new pack's key) into new packs. The
prune that called this writes the index of what is kept, new packs included, before it
deletes any old index file or pack (repo/prune.py), so a kill at any point leaves each blob
in at least one listed pack. A pack is repacked only when it could be deleted afterwards:
under Object Lock, only once its own retention and that of every index file listing it have
passed; the others are left as they are and reported.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lifeboat.errors import ConfigError, IntegrityError, NotFoundError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo.chunking import decode_payload
from lifeboat.repo.consolidate import free_of_retention, merge_entries, read_index_files
from lifeboat.repo.format import pack_name, parse_pack_header, parse_pack_trailer
from lifeboat.repo.index import Index, PackEntry
from lifeboat.repo.packer import Packer
from lifeboat.repo.packread import PACK_HEADER_LEN

if TYPE_CHECKING:
    from lifeboat.repo.handle import RepoHandle

DEFAULT_MAX_UNUSED = 0.05
SMALL_FRACTION = 0.25
SMALL_PACKS_MIN = 10


@dataclass(frozen=True)
class RepackOptions:
    """What prune may repack: `--repack-small` and `--max-unused`."""

    repack_small: bool = False  # repack small packs even when there are fewer than SMALL_PACKS_MIN
    max_unused: float | None = DEFAULT_MAX_UNUSED  # of the used bytes; None: never for unused space


def parse_max_unused(text: str) -> float | None:
    """``5%``, ``0.5%``, ``5`` (percent) or ``unlimited``, as a fraction (None: unlimited)."""
    raw = text.strip().lower()
    if raw == "unlimited":
        return None
    try:
        value = float(raw.removesuffix("%"))
    except ValueError:
        raise ConfigError(f"--max-unused {text!r}: expected a percentage such as 5% or 'unlimited'") from None
    if not 0 <= value <= 100:
        raise ConfigError(f"--max-unused {text!r}: the percentage must be between 0 and 100")
    return value / 100


@dataclass
class RepackPlan:
    """The packs a prune will repack, and those retention keeps it from repacking."""

    packs: list[str] = field(default_factory=list)  # to repack, then delete
    locked: list[str] = field(default_factory=list)  # would be repacked, but retention keeps them
    small: int = 0
    unused_bytes: int = 0  # in kept packs before repacking


def pack_entries(repo: RepoHandle, index: Index) -> tuple[dict[str, PackEntry], set[str]]:
    """Every indexed pack's own entries as its index files list them (a blob's location in
    the in-memory index may be a copy in another pack), and the packs only the in-memory
    index knows (orphans indexed by this run), whose entries are built from it and may miss
    duplicates: those are never repacked."""
    loaded, _ = read_index_files(repo, index.files, workers=repo.workers)
    entries = {p["id"]: p for p in merge_entries(loaded.values())}
    partial: set[str] = set()
    for pack_id, blob_ids in index.blobs_by_pack().items():
        if pack_id in entries:
            continue
        blobs = []
        for blob_id in sorted(set(blob_ids)):
            loc = index.get(blob_id)
            if loc is not None and loc.pack == pack_id:
                blobs.append([blob_id, loc.type, loc.offset, loc.length, loc.raw_length])
        entries[pack_id] = {"id": pack_id, "blobs": blobs}
        partial.add(pack_id)
    return entries, partial


def plan_repack(
    repo: RepoHandle,
    index: Index,
    entries: dict[str, PackEntry],
    partial: set[str],
    kept: Iterable[str],
    needed: Container[str],
    sizes: dict[str, int],
    options: RepackOptions,
) -> RepackPlan:
    """The packs to repack: small ones (enough of them, or any with --repack-small) and the
    most wasteful until unused space is within --max-unused; under retention only reported."""
    plan = RepackPlan()
    used: dict[str, int] = {}
    unused: dict[str, int] = {}
    for pack_id in kept:
        entry = entries.get(pack_id)
        if entry is None or pack_id in partial or pack_id not in sizes:
            continue
        here = 0
        for blob_id, _, _, length, _ in entry["blobs"]:
            loc = index.get(blob_id)
            if blob_id in needed and loc is not None and loc.pack == pack_id:
                here += length
        used[pack_id] = here
        unused[pack_id] = sum(b[3] for b in entry["blobs"]) - here
    plan.unused_bytes = sum(unused.values())
    small_limit = repo.pack_size * SMALL_FRACTION
    small = sorted(p for p in used if sizes[p] < small_limit)
    plan.small = len(small)
    wanted: list[str] = []
    if len(small) >= SMALL_PACKS_MIN or (options.repack_small and len(small) >= 2):
        wanted += small
    if options.max_unused is not None:
        chosen = set(wanted)
        left = sum(u for p, u in unused.items() if p not in chosen)
        allowed = options.max_unused * sum(used.values())
        by_waste = sorted(
            (p for p in unused if unused[p] and p not in chosen), key=lambda p: -unused[p] / sizes[p]
        )
        for pack_id in by_waste:
            if left <= allowed:
                break
            wanted.append(pack_id)
            left -= unused[pack_id]
    plan.packs, plan.locked = _deletable(repo, index, wanted)
    return plan


def _deletable(repo: RepoHandle, index: Index, pack_ids: list[str]) -> tuple[list[str], list[str]]:
    """Split into the packs that can be deleted after repacking and those retention keeps
    (the pack itself, or an index file listing it)."""
    if not pack_ids:
        return [], []
    listed_by: dict[str, list[str]] = {}
    wanted = set(pack_ids)
    for name, listed in index.files.items():
        for pack_id in wanted.intersection(listed):
            listed_by.setdefault(pack_id, []).append(name)
    free = free_of_retention(repo, sorted({pack_name(p) for p in pack_ids}.union(*listed_by.values())))
    ok, locked = [], []
    for pack_id in pack_ids:
        if free[pack_name(pack_id)] and all(free[n] for n in listed_by.get(pack_id, [])):
            ok.append(pack_id)
        else:
            locked.append(pack_name(pack_id))
    return ok, locked


@dataclass
class RepackResult:
    """The packs a repack wrote and the old ones it made unnecessary."""

    new_packs: list[PackEntry] = field(default_factory=list)
    bytes_written: int = 0
    repacked: list[str] = field(default_factory=list)  # old packs whose live blobs are now elsewhere
    damaged: list[str] = field(default_factory=list)  # left as they are: check reports them


def repack(
    repo: RepoHandle,
    index: Index,
    entries: dict[str, PackEntry],
    plan: RepackPlan,
    needed: Container[str],
    progress: ProgressSink = NO_PROGRESS,
) -> RepackResult:
    """Copy the needed blobs of ``plan.packs`` into new packs. A blob another kept pack is
    listed as holding is copied all the same: the listing may be a misdirecting index file's
    (any authorised writer may sign one), and trusting it would delete the only copy."""
    result = RepackResult()
    if not plan.packs:
        return result
    copied: set[str] = set()
    lock = threading.Lock()

    def uploaded(entry: PackEntry, size: int) -> None:
        with lock:
            result.new_packs.append(entry)
            result.bytes_written += size

    seal = repo.metadata.table_seal
    packer = Packer(repo.storage, repo.keyring, repo.pack_size, uploaded, open_packs=1, seal_table=seal)
    try:
        for pack_id in plan.packs:
            blobs = [b for b in entries[pack_id]["blobs"] if b[0] in needed]
            if escrowed_pack(repo, pack_id):
                continue  # key material is never re-sealed: this packer wraps to the recovery key
            try:
                payloads = _live_payloads(repo, pack_id, [b for b in blobs if b[0] not in copied])
            except (IntegrityError, NotFoundError):
                result.damaged.append(pack_name(pack_id))
                continue
            for blob_id, btype, raw_length, payload in payloads:
                packer.add(blob_id, btype, payload, raw_length)
                copied.add(blob_id)
            result.repacked.append(pack_id)
            progress.advance(1)
        packer.flush()
    finally:
        packer.close()
    return result


def escrowed_pack(repo: RepoHandle, pack_id: str) -> bool:
    """Whether the pack is sealed to the escrow key (key material), by its header; a missing
    or damaged pack is not."""
    try:
        wrapped, _ = parse_pack_header(repo.storage.get(pack_name(pack_id), 0, PACK_HEADER_LEN))
    except (NotFoundError, IntegrityError):
        return False
    return repo.keyring.is_escrowed(wrapped)


def _live_payloads(
    repo: RepoHandle, pack_id: str, blobs: list[list[Any]]
) -> list[tuple[str, str, int, bytes]]:
    """(id, type, raw length, encoded payload) of each blob, authenticated and checked
    against its id: nothing unverified is copied, and a pack with a bad blob is not
    repacked (nor deleted)."""
    if not blobs:
        return []
    data = repo.storage.get(pack_name(pack_id))
    if hashlib.sha256(data).hexdigest() != pack_id:
        raise IntegrityError(f"{pack_name(pack_id)} does not match its name")
    wrapped, _ = parse_pack_header(data)
    cipher = repo.keyring.pack_cipher(wrapped)
    # Where each blob is comes from the pack's own trailer (its name is its hash, so its
    # writer wrote it), not from the index entries: those may come from a misdirecting
    # index file. A needed blob the trailer does not hold is not here to copy.
    wanted = {str(b[0]) for b in blobs}
    held = [b for b in parse_pack_trailer(data, repo.metadata.open_table) if b[0] in wanted]
    out = []
    for blob_id, btype, offset, length, raw_length in {b[0]: b for b in held}.values():
        payload = cipher.open(data[offset : offset + length], bytes.fromhex(blob_id))
        if not repo.keyring.blob_matches(wrapped, decode_payload(payload, raw_length), blob_id):
            raise IntegrityError(f"chunk {blob_id[:16]} in {pack_name(pack_id)} does not match its id")
        out.append((str(blob_id), str(btype), int(raw_length), payload))
    return out
