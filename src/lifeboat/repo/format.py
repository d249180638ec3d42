"""Byte layouts of every repository object (docs/design/repository-format.md is the spec).

Only this package reads or writes these layouts.
"""

from __future__ import annotations

import hmac
import io
import json
import re
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import orjson
import zstandard

from lifeboat.errors import IntegrityError

FORMAT_VERSION = 1

PACK_MAGIC = b"LBPK"
PACK_TRAILER_MAGIC = b"LBPT"  # plaintext blob table (packs written before sealed trailers)
PACK_SEALED_TRAILER_MAGIC = b"LBPS"  # blob table sealed for its writer and the recovery side
INDEX_MAGIC = b"LBIX"
SNAPSHOT_MAGIC = b"LBSN"
REF_MAGIC = b"LBRF"
MAC_LEN = 32

# First byte of a blob's plaintext (before encryption): how its payload is encoded. The
# padded encodings carry the body Padmé-padded (crypto/padding.py: body 0x80 0x00...), so a
# stored length does not confirm a known file; 0x00/0x01 are unpadded (written for bodies
# already at a Padmé length, e.g. full raw chunks, and by versions before padding).
BLOB_RAW = 0x00
BLOB_ZSTD = 0x01
BLOB_RAW_PADDED = 0x02
BLOB_ZSTD_PADDED = 0x03

BLOB_DATA = "data"
BLOB_TREE = "tree"

CONFIG_NAME = "config"

# No blob is larger than the largest chunk size (16 MiB) or a tree part of that size; the
# cap stops a blob whose index entry claims more from costing more memory than that.
MAX_BLOB_SIZE = 64 << 20
# A stored blob: encoding byte, body padded (Padmé adds under 1/16 from 256 bytes on), AEAD.
MAX_STORED_BLOB = MAX_BLOB_SIZE + MAX_BLOB_SIZE // 16 + 1024
# Framed metadata is canonical JSON of mostly hex ids, which zstd shrinks 2-4x; a body that
# claims to expand far beyond that was crafted (a decompression bomb), not written by us.
MAX_FRAMED_RATIO = 32
MIN_FRAMED_LIMIT = 4 << 20
MAX_FRAMED_SIZE = 1 << 30

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX_RUN = re.compile(r"[0-9a-f]*")


def is_object_id(text: object) -> bool:
    """True for a lowercase hex SHA-256 / BLAKE3 id (pack, index, snapshot and blob ids)."""
    return isinstance(text, str) and _HEX64.fullmatch(text) is not None


_local = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    dec: zstandard.ZstdDecompressor | None = getattr(_local, "dec", None)
    if dec is None:
        dec = zstandard.ZstdDecompressor()
        _local.dec = dec
    return dec


def bounded_decompress(frame: bytes | memoryview, limit: int, what: str) -> bytes:
    """Decompress one zstd frame, refusing to produce more than ``limit`` bytes.

    ``ZstdDecompressor.decompress`` trusts the frame's declared content size and ignores
    ``max_output_size`` when one is present, so a 6 KiB frame declaring 200 MiB allocates
    200 MiB. A streaming reader asked for ``limit + 1`` bytes never holds more than that.
    """
    try:
        declared = zstandard.get_frame_parameters(frame).content_size
    except zstandard.ZstdError:
        raise IntegrityError(f"{what} is damaged (not a zstd frame)") from None
    if declared != zstandard.CONTENTSIZE_UNKNOWN:
        if declared > limit:
            raise IntegrityError(f"{what} claims {declared} bytes when decompressed, more than {limit}")
        try:  # the fast path: one allocation of the declared size, which is within the limit
            return _decompressor().decompress(frame)
        except zstandard.ZstdError:
            raise IntegrityError(f"{what} failed to decompress") from None
    out = bytearray()
    try:
        with _decompressor().stream_reader(io.BytesIO(frame)) as reader:
            while len(out) <= limit:
                part = reader.read(limit + 1 - len(out))
                if not part:
                    break
                out += part
    except zstandard.ZstdError:
        raise IntegrityError(f"{what} failed to decompress") from None
    if len(out) > limit:
        raise IntegrityError(f"{what} decompresses to more than the {limit} bytes allowed")
    return bytes(out)


def pack_name(pack_id: str) -> str:
    """The storage name of a pack."""
    return f"data/{pack_id[:2]}/{pack_id}"


def index_name(index_id: str) -> str:
    """The storage name of an index file."""
    return f"index/{index_id}"


def snapshot_name(snapshot_id: str) -> str:
    """The storage name of a snapshot header."""
    return f"snapshots/{snapshot_id}"


def ref_name(namespace: str, name: str) -> str:
    """The storage name of a named ref."""
    return f"refs/{namespace}/{name}"


def record_name(name: str) -> str:
    """The storage name of a plaintext record."""
    return f"records/{name}"


class BlobLocation(NamedTuple):
    """Where a blob lives: pack, byte range of its envelope, type and plaintext size.
    A named tuple: a restore makes one per chunk it plans, and a frozen dataclass took
    four times as long to build."""

    pack: str
    offset: int
    length: int
    raw_length: int
    type: str


# --- packs -------------------------------------------------------------------------
#
# pack := "LBPK" u8(version) u16(len(wrapped)) wrapped_data_key  blob*  trailer
# blob := envelope(suite, nonce, ciphertext+tag) with AAD = blob id (32 bytes)
# trailer := json({"blobs": [[id, type, offset, length, raw_length], ...]}) u32(len) "LBPT"


def pack_header(wrapped_key: bytes) -> bytes:
    """The header that starts a pack (magic, version and the wrapped data key)."""
    return PACK_MAGIC + struct.pack(">BH", FORMAT_VERSION, len(wrapped_key)) + wrapped_key


def parse_pack_header(data: bytes) -> tuple[bytes, int]:
    """Return (wrapped data key, header length) from the first bytes of a pack."""
    if len(data) < 7 or data[:4] != PACK_MAGIC:
        raise IntegrityError("pack header is damaged (bad magic)")
    version, wrapped_len = struct.unpack(">BH", data[4:7])
    if version != FORMAT_VERSION:
        raise IntegrityError(f"pack format version {version} is not supported")
    end = 7 + wrapped_len
    if wrapped_len == 0 or len(data) < end:
        raise IntegrityError("pack header is truncated")
    return data[7:end], end


# (blob table or sealed table, the pack's wrapped data key) -> the table sealed or opened;
# the wrapped key is unique to the pack, so a table opens only in the pack it was made for
TableSeal = Callable[[bytes, bytes], bytes]


def pack_trailer(
    blobs: list[tuple[str, str, int, int, int]], wrapped_key: bytes, seal: TableSeal | None
) -> bytes:
    """The trailer that ends a pack: its blob table, sealed with ``seal`` (repo/sealed.py
    ``seal_table``: for the writer and the recovery side, so the storage provider and other
    writers read no blob ids, types or plaintext lengths), or plaintext in a repository
    without writer identities."""
    body = orjson.dumps({"blobs": blobs})
    if seal is None:
        return body + struct.pack(">I", len(body)) + PACK_TRAILER_MAGIC
    sealed = seal(body, wrapped_key)
    return sealed + struct.pack(">I", len(sealed)) + PACK_SEALED_TRAILER_MAGIC


def trailer_is_sealed(pack: bytes) -> bool:
    """True when the pack's blob table opens only with its writer's or the recovery key."""
    return pack[-4:] == PACK_SEALED_TRAILER_MAGIC


def parse_pack_trailer(
    pack: bytes, open_table: TableSeal | None = None
) -> list[tuple[str, str, int, int, int]]:
    """The blob table of a whole pack (IntegrityError when damaged, or sealed and
    ``open_table`` cannot open it); a plaintext table (older packs) needs no key."""
    magic = pack[-4:]
    if len(pack) < 8 or magic not in (PACK_TRAILER_MAGIC, PACK_SEALED_TRAILER_MAGIC):
        raise IntegrityError("pack trailer is damaged (bad magic)")
    (length,) = struct.unpack(">I", pack[-8:-4])
    if length > len(pack) - 8:
        raise IntegrityError("pack trailer is damaged (length beyond the pack)")
    table = pack[-8 - length : -8]
    if magic == PACK_SEALED_TRAILER_MAGIC:
        if open_table is None:
            raise IntegrityError("pack trailer is sealed: reading it needs its writer's or the recovery key")
        table = open_table(table, parse_pack_header(pack)[0])
    try:
        body = orjson.loads(table)
        blobs = [(str(b[0]), str(b[1]), int(b[2]), int(b[3]), int(b[4])) for b in body["blobs"]]
    except (ValueError, KeyError, TypeError, IndexError):
        raise IntegrityError("pack trailer is damaged") from None
    for blob in blobs:
        check_blob_entry(blob, len(pack) - 8 - length)
    return blobs


def check_blob_entry(blob: tuple[str, str, int, int, int], pack_size: int | None = None) -> None:
    """A blob entry (index or trailer) must be well formed before anything trusts it."""
    blob_id, btype, offset, length, raw_length = blob
    if not is_object_id(blob_id) or btype not in (BLOB_DATA, BLOB_TREE):
        raise IntegrityError("blob entry is damaged (bad id or type)")
    if not 7 <= offset < 1 << 62 or length <= 0 or not 0 <= raw_length <= MAX_BLOB_SIZE:
        raise IntegrityError(f"blob entry {blob_id[:16]} is damaged (impossible offset or length)")
    if length > MAX_STORED_BLOB or (pack_size is not None and offset + length > pack_size):
        raise IntegrityError(f"blob entry {blob_id[:16]} is damaged (extends beyond its pack)")


def object_ids_valid(ids: Sequence[Any]) -> bool:
    """``is_object_id`` of every one, each test over the whole column in C."""
    if len(ids) < 8:  # one file's entry (an unchanged backup decodes one per file): no sets
        return all(map(is_object_id, ids))
    if set(map(type, ids)) != {str} or set(map(len, ids)) != {64}:  # type(): exactly str
        return False
    return _HEX_RUN.fullmatch("".join(ids)) is not None


def blob_entries_valid(blobs: object) -> bool:
    """``check_blob_entry`` over a whole list of ``[id, type, offset, length, raw_length]``
    at once, without a pack size: each test runs over a column in C (an index file lists
    50,000 blobs, and a million-blob index was validated blob by blob for a second)."""
    if not isinstance(blobs, list):
        return False
    if not blobs:
        return True
    if set(map(type, blobs)) != {list} or set(map(len, blobs)) != {5}:
        return False
    ids, types, offsets, lengths, raw_lengths = zip(*blobs, strict=True)
    if not object_ids_valid(ids) or set(map(type, offsets + lengths + raw_lengths)) != {int}:
        return False  # type() is exact: a bool is no offset
    try:
        if not set(types) <= {BLOB_DATA, BLOB_TREE}:
            return False
    except TypeError:  # an unhashable type field
        return False
    return bool(
        min(offsets) >= 7
        and max(offsets) < 1 << 62
        and min(lengths) > 0
        and max(lengths) <= MAX_STORED_BLOB
        and min(raw_lengths) >= 0
        and max(raw_lengths) <= MAX_BLOB_SIZE
    )


# --- framed metadata files (index, snapshot, ref) ------------------------------------
#
# file := magic(4) u8(version) mac(32) zstd(json)
# mac := keyed BLAKE3 of zstd(json) under the repository's MAC key


def canonical_json(payload: dict[str, Any]) -> bytes:
    """Compact JSON with sorted keys, as every metadata object is written."""
    # orjson: the stdlib encoder was a sixth of a many-small-files backup (index files list
    # every blob). Same bytes for ASCII payloads; anything else keeps the stdlib's escaping.
    try:
        text = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        text = b""
    if not text or not text.isascii():
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return text


def encode_framed(magic: bytes, payload: dict[str, Any], mac: Callable[[bytes], bytes]) -> bytes:
    """A MAC'd, compressed JSON object with a magic prefix (snapshots, refs, index)."""
    body = zstandard.ZstdCompressor(level=3).compress(canonical_json(payload))
    return magic + bytes([FORMAT_VERSION]) + mac(body) + body


def decode_framed(magic: bytes, data: bytes, mac: Callable[[bytes], bytes], what: str) -> dict[str, Any]:
    """The JSON object of ``encode_framed`` output, authenticated (IntegrityError otherwise)."""
    if len(data) < 5 + MAC_LEN or data[:4] != magic:
        raise IntegrityError(f"{what} is damaged (bad magic)")
    if data[4] != FORMAT_VERSION:
        raise IntegrityError(f"{what} has unsupported format version {data[4]}")
    tag, body = data[5 : 5 + MAC_LEN], data[5 + MAC_LEN :]
    if not hmac.compare_digest(tag, mac(body)):
        raise IntegrityError(f"{what} failed authentication (modified or corrupted)")
    # The MAC key is on every backup host, so an authenticated body can still be hostile.
    return json_of_compressed(body, what)


def json_of_compressed(body: bytes, what: str) -> dict[str, Any]:
    """The JSON object in a zstd body, decompressed within a bound (a hostile body cannot
    make the reader allocate more than a small multiple of its size)."""
    limit = min(MAX_FRAMED_SIZE, max(MIN_FRAMED_LIMIT, len(body) * MAX_FRAMED_RATIO))
    try:
        payload = orjson.loads(bounded_decompress(body, limit, what))
    except ValueError:
        raise IntegrityError(f"{what} is damaged") from None
    if not isinstance(payload, dict):
        raise IntegrityError(f"{what} is damaged")
    return payload
