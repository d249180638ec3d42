"""`check`: structure (everything referenced exists) and, with --read-data, every byte."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING

from lifeboat import memory
from lifeboat.bounded import map_ahead
from lifeboat.errors import ConfigError, IntegrityError, NotFoundError, StorageError
from lifeboat.progress import NO_PROGRESS, ProgressSink
from lifeboat.repo.backup import PACK_BUFFERS_MAPPED
from lifeboat.repo.chunking import decode_payload
from lifeboat.repo.escrow import escrow_problems
from lifeboat.repo.format import (
    BlobLocation,
    TableSeal,
    pack_name,
    parse_pack_header,
    parse_pack_trailer,
    snapshot_name,
    trailer_is_sealed,
)
from lifeboat.repo.idtable import IdTable
from lifeboat.repo.immutability import endpoint_problems, lockable, retention_problems, tampering_problems
from lifeboat.repo.index import Index, PackEntry, stored_index_problems
from lifeboat.repo.keyring import EscrowRequired
from lifeboat.repo.locks import RepoLock
from lifeboat.repo.model import CheckReport, Problem, References, SnapshotInfo
from lifeboat.repo.records import RecordsView
from lifeboat.repo.references import collect_references
from lifeboat.repo.snapshot_cache import SnapshotCache
from lifeboat.repo.snapshots import list_snapshots
from lifeboat.repo.trust import LEGACY_WARNING, Trust

if TYPE_CHECKING:
    from lifeboat.repo.handle import RepoHandle

READ_DATA_BLOBS = 100_000  # blobs whose index records one pass gathers (raw, ~6 MB)
# Pack bytes check --read-data holds at once: four 8 MiB packs. Verifying a pack is CPU
# (hash, decrypt, a Python step per blob): more at once gained nothing on two cores, and
# eight held ~60 MB (1,000,000 small files: 235 MB in all).
READ_DATA_BYTES = 32 << 20


def _affected(refs: References, blob_ids: list[str]) -> tuple[list[str], list[str]]:
    snaps: set[str] = set()
    files: set[str] = set()
    for blob_id in blob_ids:
        for snap, path in refs.users.get(blob_id, []):
            snaps.add(snap)
            files.add(path)
    return sorted(snaps), sorted(files)


@dataclass(frozen=True)
class Subset:
    """Part ``part`` of ``parts`` of the packs (restic's --read-data-subset n/t): a pack's
    part follows from its id, so the parts stay stable as packs are added."""

    part: int
    parts: int

    @classmethod
    def parse(cls, text: str) -> Subset:
        """The subset written ``N/T`` (1 <= N <= T)."""
        try:
            part, parts = (int(x) for x in text.split("/"))
        except ValueError:
            raise ConfigError(f"read-data subset {text!r}: expected N/T, e.g. 3/7") from None
        if not 1 <= part <= parts:
            raise ConfigError(f"read-data subset {text!r}: N must be between 1 and T")
        return cls(part, parts)

    def holds(self, pack_id: str) -> bool:
        """Whether the pack falls into this part."""
        return int(pack_id[:8], 16) % self.parts == self.part - 1

    def __str__(self) -> str:
        return f"{self.part}/{self.parts}"


def check_repository(
    repo: RepoHandle,
    *,
    read_data: bool,
    progress: ProgressSink = NO_PROGRESS,
    subset: Subset | None = None,
    hash_only: bool = False,
) -> CheckReport:
    """``hash_only`` reads packs and checks them against their names without decrypting,
    which needs no recovery key (the daemon's bit-rot scan on a backup host)."""
    if read_data and not hash_only:
        repo.require_reader("check --read-data")
    report = CheckReport(read_data=read_data, subset=str(subset) if subset else None)
    with RepoLock(repo.storage, exclusive=False, operation="check"):
        index = repo.index(refresh=True)
        for name, problem in index.damaged.items():
            report.problems.append(Problem("corrupt-index", name, problem))
        for name, problem in index.refused.items():  # ignored by every reader; named here
            report.problems.append(Problem("refused-index", name, problem))
        for name, problem in stored_index_problems(repo.storage, repo.metadata, index, repo.workers).items():
            report.problems.append(Problem("corrupt-index", name, problem))
        # every header read from the storage (check looks for damage); one whose bytes are
        # those this host verified before is not decrypted and verified again
        trust = repo.trust()
        if trust is None:
            report.warnings.append(LEGACY_WARNING)
        cache = SnapshotCache(repo.cache_dir, repo.cache_seal)
        listing = list_snapshots(repo.storage, repo.metadata, trust, cache=cache, reread=True)
        snapshots = listing.accepted
        for name, problem in listing.damaged.items():
            report.problems.append(Problem("corrupt-snapshot", name, problem, [name.rsplit("/", 1)[-1][:12]]))
        for note in (listing.sealed_summary(), _sealed_indexes(index), _time_note(trust)):
            if note:  # a writer key opens only its own: the recovery side judges the rest
                report.warnings.append(note)
        for refused in listing.refused:  # never used by any reader; named so they can be removed
            name = snapshot_name(refused.id)
            report.problems.append(Problem("refused-snapshot", name, refused.describe(), [refused.id[:12]]))
        # who uses each blob only where retention asks it (a lockable store); otherwise which
        # blobs are used, and who uses the few found missing or damaged is asked after
        # (a million used blobs with their users took ~400 MB)
        by_user = lockable(repo.storage) is not None
        refs = collect_references(repo, read_trees=repo.keyring.can_read, snapshots=snapshots, users=by_user)
        pending: list[tuple[Problem, list[str]]] = []  # problems still to name their users
        report.problems.extend(refs.problems)
        report.problems.extend(endpoint_problems(repo))
        report.problems.extend(tampering_problems(repo))
        report.problems.extend(
            escrow_problems(repo.config, repo.keyring, RecordsView(repo.storage, repo.config))
        )
        report.problems.extend(retention_problems(repo, refs, index))
        report.snapshots = len(refs.snapshots)
        stored = {obj.name.rsplit("/", 1)[-1]: obj.size for obj in repo.storage.list("data/")}
        report.packs = len(stored)
        report.chunks = len(index)
        for blob_id in refs.users if by_user else chain(refs.used, refs.invalid):
            locations = index.locations(blob_id)
            gone = [loc.pack for loc in locations if loc.pack not in stored]
            if len(gone) == len(locations):
                where = f"its pack {gone[0][:16]} is missing" if gone else "not in any index"
                missing = Problem("missing-chunk", blob_id, f"chunk {blob_id[:16]} is {where}")
                report.problems.append(missing)
                pending.append((missing, [blob_id]))
            elif gone:  # every index file a prune leaves lists existing packs only
                report.problems.append(
                    Problem(
                        "corrupt-index",
                        pack_name(gone[0]),
                        f"an index file places chunk {blob_id[:16]} in a pack that does not exist",
                    )
                )
        if read_data:
            if not refs.record_users:  # users are found again from the trees, if need be:
                refs.used = IdTable()  # ~36 MB at a million blobs, not held while packs are read
                memory.release_free_memory()
            chosen = {p: size for p, size in stored.items() if subset is None or subset.holds(p)}
            _read_all_packs(repo, pending, chosen, report, progress, decrypt=not hash_only)
        _name_users(repo, refs, snapshots, pending)
    return report


def _name_users(
    repo: RepoHandle,
    refs: References,
    snapshots: list[SnapshotInfo],
    pending: list[tuple[Problem, list[str]]],
) -> None:
    """Each problem's snapshots and files: from ``refs`` when it recorded users, else from
    the trees read again for those blobs alone (only when something is wrong)."""
    if not pending:
        return
    if not refs.record_users:
        wanted = {blob_id for _, blob_ids in pending for blob_id in blob_ids}
        can_read = repo.keyring.can_read
        try:
            refs = collect_references(repo, read_trees=can_read, snapshots=snapshots, users_of=wanted)
        except StorageError as exc:  # the problems stand; only who they affect is unknown
            for problem, _ in pending:
                problem.message += f" (affected snapshots unknown: {exc})"
            return
    for problem, blob_ids in pending:
        problem.snapshots, problem.files = _affected(refs, blob_ids)


def _time_note(trust: Trust | None) -> str | None:
    """What the back-dating rule (repo/storage_times.py) could not use: a store whose file
    times the writer sets, or snapshots dated by copy records (unauthenticated)."""
    if trust is None:
        return None
    if trust.times.copied:
        return (
            f"{len(trust.times.copied)} snapshot(s) are judged by the write times of copy records "
            "(records/copies/): expected in a copy made by 'lifeboat copy', never in a primary"
        )
    if not trust.times.trusted:
        return "snapshot times are as their writers claim: this storage has no write time writers cannot set"
    return None


def _sealed_indexes(index: Index) -> str | None:
    if not index.sealed:
        return None
    return (
        f"{len(index.sealed)} index file(s) by other writers are sealed to this key and were not "
        "judged: run 'lifeboat check' with the recovery key"
    )


def _trailer_problems(
    data: bytes, pack_id: str, open_table: TableSeal | None
) -> tuple[dict[str, tuple[str, str, int, int, int]], list[Problem]]:
    """The pack's blob table by blob id, or a corrupt-pack problem when it does not parse or
    does not open."""
    try:
        return {b[0]: b for b in parse_pack_trailer(data, open_table)}, []
    except IntegrityError as exc:
        return {}, [Problem("corrupt-pack", pack_name(pack_id), str(exc))]


def _read_all_packs(
    repo: RepoHandle,
    pending: list[tuple[Problem, list[str]]],
    stored: dict[str, int],
    report: CheckReport,
    progress: ProgressSink,
    *,
    decrypt: bool,
) -> None:
    index = repo.index()
    # each pack's entries from the index a group at a time (Index.pack_entries), not every
    # blob id as a string at once (a million took ~130 MB)
    usage, _ = index.pack_usage(IdTable())
    packs = sorted(p for p in index.packs() if p in stored)
    progress.start(sum(stored[p] for p in packs))
    lock = threading.Lock()

    def verify_pack(entry: PackEntry) -> list[Problem]:
        pack_id = entry["id"]
        problems: list[Problem] = []
        try:
            data = repo.storage.get(pack_name(pack_id))
        except NotFoundError:
            return [Problem("missing-pack", pack_name(pack_id), "pack vanished during check")]
        with lock:
            report.bytes_read += len(data)
        progress.advance(len(data))
        if hashlib.sha256(data).hexdigest() != pack_id:
            problems.append(
                Problem("corrupt-pack", pack_name(pack_id), "pack content does not match its name")
            )
        with lock:
            report.packs_read += 1
        if not decrypt:
            # a backup key opens only its own sealed tables, and cannot tell another writer's
            # from a damaged one: only an older pack's plaintext table is judged here (the
            # pack's name, its hash, already vouches for every byte of it)
            if not trailer_is_sealed(data):
                problems += _trailer_problems(data, pack_id, None)[1]
            return problems
        bad: list[str] = []
        wrapped = b""
        try:
            wrapped, _ = parse_pack_header(data)
            cipher = repo.keyring.pack_cipher(wrapped)
        except EscrowRequired:
            return problems  # key material: its chunks open only with the custodians' shares
        except IntegrityError:
            cipher = None
        trailer, damaged = _trailer_problems(data, pack_id, repo.metadata.open_table)
        problems += damaged
        for blob_id, btype, offset, length, raw_length in entry["blobs"]:
            loc = BlobLocation(pack_id, offset, length, raw_length, btype)
            held = trailer.get(blob_id, ())
            if trailer and tuple(held[1:]) != (loc.type, loc.offset, loc.length, loc.raw_length):
                # The pack (its name is its hash) does not hold this chunk there: an index
                # file misdirects it. The pack is not to blame; restores try other locations.
                problems.append(
                    Problem(
                        "corrupt-index",
                        pack_name(pack_id),
                        f"an index file places chunk {blob_id[:16]} where the pack does not hold it",
                    )
                )
                continue
            try:
                if cipher is None:
                    raise IntegrityError("pack header is damaged")
                envelope = data[loc.offset : loc.offset + loc.length]
                plain = decode_payload(cipher.open(envelope, bytes.fromhex(blob_id)), loc.raw_length)
                if not repo.keyring.blob_matches(wrapped, plain, blob_id):
                    raise IntegrityError("content does not match id")
            except IntegrityError:
                bad.append(blob_id)
        if bad:
            failed = f"{len(bad)} chunk(s) in pack {pack_id[:16]} failed authentication"
            corrupt = Problem("corrupt-chunk", pack_name(pack_id), failed)
            problems.append(corrupt)
            with lock:
                pending.append((corrupt, bad))
        return problems

    # the entries of a few packs beyond those being read, not a whole pass's: Executor.map
    # would take every entry of a pass first (~30 MB at 100,000 blobs)
    readers = min(repo.workers, max(2, READ_DATA_BYTES // max(1, repo.pack_size)))
    with memory.large_buffers_mapped(PACK_BUFFERS_MAPPED), ThreadPoolExecutor(max_workers=readers) as pool:
        entries = index.pack_entries(packs, usage, most=READ_DATA_BLOBS)
        for problems in map_ahead(pool, verify_pack, entries, readers + 2):
            report.problems.extend(problems)
