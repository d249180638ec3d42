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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lifeboat import memory
from lifeboat.errors import ConfigError, IntegrityError, NotFoundError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo.backup import PACK_BUFFERS_MAPPED
from lifeboat.repo.chunking import decode_payload
from lifeboat.repo.consolidate import free_of_retention
from lifeboat.repo.format import index_name, pack_name, parse_pack_header, parse_pack_trailer
from lifeboat.repo.idtable import IdTable
from lifeboat.repo.index import INDEX_FILE_BLOBS, Index, PackEntry, PackUsage, write_index
from lifeboat.repo.packer import Packer
from lifeboat.repo.packread import PACK_HEADER_LEN

if TYPE_CHECKING:
    from lifeboat.repo.handle import RepoHandle

DEFAULT_MAX_UNUSED = 0.05
SMALL_FRACTION = 0.25
SMALL_PACKS_MIN = 10
TRIM_EVERY = 4  # packs repacked between returns of free pages (memory.return_free_pages)


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


def plan_repack(
    repo: RepoHandle,
    index: Index,
    usage: Mapping[str, PackUsage],
    kept: Iterable[str],
    sizes: dict[str, int],
    options: RepackOptions,
) -> RepackPlan:
    """The packs to repack: small ones (enough of them, or any with --repack-small) and the
    most wasteful until unused space is within --max-unused; under retention only reported.
    A pack no index file lists (an orphan this run indexed from its own table) is never
    chosen: what the in-memory index says of it comes from its writer alone."""
    plan = RepackPlan()
    listed = {p for pack_ids in index.files.values() for p in pack_ids}
    used: dict[str, int] = {}
    unused: dict[str, int] = {}
    for pack_id in kept:
        held = usage.get(pack_id)
        if held is None or pack_id not in listed or pack_id not in sizes:
            continue
        used[pack_id] = held.used_bytes
        unused[pack_id] = held.listed_bytes - held.used_bytes
    plan.unused_bytes = sum(unused.values())
    small_limit = repo.pack_size * SMALL_FRACTION
    # key material is never re-sealed (a repack's packer wraps to the recovery key): its
    # packs neither count towards the small ones nor spend the unused budget, or a prune
    # would repack a lone small pack over and over. Only candidates' headers are read.
    small = sorted(p for p in used if sizes[p] < small_limit and not escrowed_pack(repo, p))
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
            if escrowed_pack(repo, pack_id):  # its waste stays whatever this prune does
                left -= unused[pack_id]
                continue
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
    """The packs a repack wrote and the old ones it made unnecessary. The new packs are
    indexed as they are stored, an index file per ``INDEX_FILE_BLOBS`` of their blobs
    (``index_files``), before prune deletes anything, as its own index: a million copied
    blobs held as entries to the end took ~160 MB, and a kill leaves them listed twice,
    which the next prune tidies. ``new_packs`` are those not indexed yet."""

    new_packs: list[PackEntry] = field(default_factory=list)
    index_files: set[str] = field(default_factory=set)
    unindexed: int = 0  # blobs in new_packs
    bytes_written: int = 0
    repacked: list[str] = field(default_factory=list)  # old packs whose live blobs are now elsewhere
    damaged: list[str] = field(default_factory=list)  # left as they are: check reports them


def repack(
    repo: RepoHandle,
    usage: Mapping[str, PackUsage],
    plan: RepackPlan,
    needed: IdTable,
    progress: ProgressSink = NO_PROGRESS,
) -> RepackResult:
    """Copy the needed blobs of ``plan.packs`` into new packs. A blob another kept pack is
    listed as holding is copied all the same: the listing may be a misdirecting index file's
    (any authorised writer may sign one), and trusting it would delete the only copy. A
    pack whose needed blobs an earlier one of these already gave is read all the same (what
    it holds is known only from its trailer): one GET more, and left as it is if damaged.
    Each blob copied leaves ``needed``, so that it is copied once: a second table of the
    copied ids held ~30 MB at 700,000 blobs."""
    result = RepackResult()
    if not plan.packs:
        return result
    lock = threading.Lock()

    def uploaded(entry: PackEntry, size: int) -> None:
        """On the upload thread, once the pack is stored: its index written with the
        packs stored before it, every INDEX_FILE_BLOBS of their blobs."""
        blobs = len(entry["blobs"])
        with lock:
            result.bytes_written += size
            stored: list[PackEntry] = []
            if result.new_packs and result.unindexed + blobs > INDEX_FILE_BLOBS:  # full files only
                stored, result.new_packs, result.unindexed = result.new_packs, [], 0
            result.new_packs.append(entry)
            result.unindexed += blobs
        if stored:
            stored_files = write_index(repo.storage, stored, repo.metadata, repo.index_cache)
            written = {index_name(i) for i in stored_files}
            with lock:
                result.index_files |= written

    # packs read and made in mappings of their own: carved from the arenas, they fragmented
    # them (a heavy prune of a million small files)
    with memory.large_buffers_mapped(PACK_BUFFERS_MAPPED):
        seal = repo.metadata.table_seal
        # one pack filling and two uploading: the old pack read is the rest of what repack holds
        packer = Packer(
            repo.storage, repo.keyring, repo.pack_size, uploaded, 2, open_packs=1, seal_table=seal
        )
        try:
            for pack_id in plan.packs:  # no escrowed pack: plan_repack leaves them out
                held = usage.get(pack_id)
                try:
                    payloads = _live_payloads(repo, pack_id, needed) if held and held.needed else []
                except (IntegrityError, NotFoundError):
                    result.damaged.append(pack_name(pack_id))
                    continue
                for blob_id, btype, raw_length, payload in payloads:
                    packer.add(blob_id, btype, payload, raw_length)
                    needed.remove(blob_id)
                del payloads
                result.repacked.append(pack_id)
                if len(result.repacked) % TRIM_EVERY == 0:
                    memory.return_free_pages()
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


def _live_payloads(repo: RepoHandle, pack_id: str, needed: IdTable) -> list[tuple[str, str, int, bytes]]:
    """(id, type, raw length, encoded payload) of each needed blob the pack holds and no
    earlier pack of this repack gave, authenticated and checked against its id: nothing
    unverified is copied, and a pack with a bad blob is not repacked (nor deleted)."""
    data = repo.storage.get(pack_name(pack_id))
    if hashlib.sha256(data).hexdigest() != pack_id:
        raise IntegrityError(f"{pack_name(pack_id)} does not match its name")
    wrapped, _ = parse_pack_header(data)
    cipher = repo.keyring.pack_cipher(wrapped)
    # Where each blob is comes from the pack's own trailer (its name is its hash, so its
    # writer wrote it), not from the index entries: those may come from a misdirecting
    # index file. A needed blob the trailer does not hold is not here to copy.
    trailer = parse_pack_trailer(data, repo.metadata.open_table)
    held = [b for b in trailer if b[0] in needed]
    out = []
    for blob_id, btype, offset, length, raw_length in {b[0]: b for b in held}.values():
        payload = cipher.open(data[offset : offset + length], bytes.fromhex(blob_id))
        if not repo.keyring.blob_matches(wrapped, decode_payload(payload, raw_length), blob_id):
            raise IntegrityError(f"chunk {blob_id[:16]} in {pack_name(pack_id)} does not match its id")
        out.append((str(blob_id), str(btype), int(raw_length), payload))
    return out
