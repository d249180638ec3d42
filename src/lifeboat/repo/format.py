"""Byte layouts of every repository object (docs/design/repository-format.md is the spec).

Only this package reads or writes these layouts.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import zstandard

from lifeboat.errors import IntegrityError

FORMAT_VERSION = 1

PACK_MAGIC = b"LBPK"
PACK_TRAILER_MAGIC = b"LBPT"
INDEX_MAGIC = b"LBIX"
SNAPSHOT_MAGIC = b"LBSN"
REF_MAGIC = b"LBRF"
MAC_LEN = 32

# First byte of a blob's plaintext (before encryption): how its payload is encoded.
BLOB_RAW = 0x00
BLOB_ZSTD = 0x01

BLOB_DATA = "data"
BLOB_TREE = "tree"

CONFIG_NAME = "config"


def pack_name(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


def index_name(index_id: str) -> str:
    return f"index/{index_id}"


def snapshot_name(snapshot_id: str) -> str:
    return f"snapshots/{snapshot_id}"


def ref_name(namespace: str, name: str) -> str:
    return f"refs/{namespace}/{name}"


def record_name(name: str) -> str:
    return f"records/{name}"


@dataclass(frozen=True)
class BlobLocation:
    """Where a blob lives: pack, byte range of its envelope, type and plaintext size."""

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
    return PACK_MAGIC + struct.pack(">BH", FORMAT_VERSION, len(wrapped_key)) + wrapped_key


def parse_pack_header(data: bytes) -> tuple[bytes, int]:
    """Return (wrapped data key, header length) from the first bytes of a pack."""
    if len(data) < 7 or data[:4] != PACK_MAGIC:
        raise IntegrityError("pack header is damaged (bad magic)")
    version, wrapped_len = struct.unpack(">BH", data[4:7])
    if version != FORMAT_VERSION:
        raise IntegrityError(f"pack format version {version} is not supported")
    end = 7 + wrapped_len
    if len(data) < end:
        raise IntegrityError("pack header is truncated")
    return data[7:end], end


def pack_trailer(blobs: list[tuple[str, str, int, int, int]]) -> bytes:
    body = json.dumps({"blobs": blobs}, separators=(",", ":")).encode()
    return body + struct.pack(">I", len(body)) + PACK_TRAILER_MAGIC


def parse_pack_trailer(pack: bytes) -> list[tuple[str, str, int, int, int]]:
    if len(pack) < 8 or pack[-4:] != PACK_TRAILER_MAGIC:
        raise IntegrityError("pack trailer is damaged (bad magic)")
    (length,) = struct.unpack(">I", pack[-8:-4])
    try:
        body = orjson.loads(pack[-8 - length : -8])
        return [(str(b[0]), str(b[1]), int(b[2]), int(b[3]), int(b[4])) for b in body["blobs"]]
    except (ValueError, KeyError, TypeError):
        raise IntegrityError("pack trailer is damaged") from None


# --- framed metadata files (index, snapshot, ref) ------------------------------------
#
# file := magic(4) u8(version) mac(32) zstd(json)
# mac := keyed BLAKE3 of zstd(json) under the repository's MAC key


def encode_framed(magic: bytes, payload: dict[str, Any], mac: Callable[[bytes], bytes]) -> bytes:
    body = zstandard.ZstdCompressor(level=3).compress(
        json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    )
    return magic + bytes([FORMAT_VERSION]) + mac(body) + body


def decode_framed(magic: bytes, data: bytes, mac: Callable[[bytes], bytes], what: str) -> dict[str, Any]:
    if len(data) < 5 + MAC_LEN or data[:4] != magic:
        raise IntegrityError(f"{what} is damaged (bad magic)")
    if data[4] != FORMAT_VERSION:
        raise IntegrityError(f"{what} has unsupported format version {data[4]}")
    tag, body = data[5 : 5 + MAC_LEN], data[5 + MAC_LEN :]
    import hmac

    if not hmac.compare_digest(tag, mac(body)):
        raise IntegrityError(f"{what} failed authentication (modified or corrupted)")
    try:
        payload = orjson.loads(zstandard.ZstdDecompressor().decompress(body))
    except (ValueError, zstandard.ZstdError):
        raise IntegrityError(f"{what} is damaged") from None
    if not isinstance(payload, dict):
        raise IntegrityError(f"{what} is damaged")
    return payload
