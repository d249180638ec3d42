"""Evidence bundles: drill.json, human reports, logs, SHA256SUMS signed with Ed25519.

`verify_bundle` needs the bundle and the fingerprint of the key it must be signed by (pinned
by the auditor, or read from the repository's root-signed drill-key record): any changed
byte, added or missing file, or a signature by any other key fails it. The signer's public
key travels in the signature only to be compared with the pin (crypto/pinning.py).
`vouched_drill` is the part of that check `status` needs: drill.json as a trusted key signed it.

A bundle is written under a hidden name and renamed into place once signed, so a reader
never finds one half-written (a drill killed while writing leaves only the hidden one).
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifeboat.crypto.pinning import fingerprint, sign_bundle, verify_bundle_signature
from lifeboat.crypto.signed import SIGNATURE_SIZE, Signature
from lifeboat.errors import IntegrityError

DRILL_JSON = "drill.json"
SUMS = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.sig"
PUBLIC_KEY = "drill-key.pub"  # pre-#14 bundles carried the key they were checked with


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(bundle: Path) -> list[str]:
    return sorted(
        str(p.relative_to(bundle))
        for p in bundle.rglob("*")
        if p.is_file() and str(p.relative_to(bundle)) not in (SUMS, SIGNATURE, PUBLIC_KEY)
    )


def write_bundle(
    bundle: Path,
    drill: dict[str, Any],
    logs: dict[str, str],
    report_md: str,
    report_html: str,
    key: Ed25519PrivateKey,
) -> Path:
    """Write a drill's evidence bundle: JSON, logs, report, and their signed hashes. It is
    written beside ``bundle`` under a hidden name and renamed onto it whole: ``bundle`` is
    the empty directory ``reserve_bundle`` made (rename replaces an empty directory only)."""
    partial = bundle.parent / f".{bundle.name}.partial-{secrets.token_hex(4)}"
    partial.mkdir()
    (partial / DRILL_JSON).write_text(json.dumps(drill, indent=2, sort_keys=True, default=str) + "\n")
    (partial / "report.md").write_text(report_md)
    (partial / "report.html").write_text(report_html)
    if logs:
        (partial / "logs").mkdir()
        for name, text in logs.items():
            (partial / "logs" / f"{name}.log").write_text(text)
    sums = "".join(f"{_sha256(partial / name)}  {name}\n" for name in _files(partial))
    (partial / SUMS).write_text(sums)
    (partial / SIGNATURE).write_text(base64.b64encode(sign_bundle(key, sums.encode())).decode() + "\n")
    os.rename(partial, bundle)
    return bundle


def reserve_bundle(out_root: Path, stem: str) -> Path:
    """A new, empty directory ``out_root/stem`` (``stem-2``, ``-3``... when taken) for a
    bundle: made at once, so two drills finishing together never pick the same name."""
    out_root.mkdir(parents=True, exist_ok=True)
    suffix = 1
    while True:
        bundle = out_root / (stem if suffix == 1 else f"{stem}-{suffix}")
        try:
            bundle.mkdir()
            return bundle
        except FileExistsError:
            suffix += 1


def is_bundle_name(name: str) -> bool:
    """Whether a directory of an evidence directory is a bundle (not one being written)."""
    return not name.startswith(".")


@dataclass
class BundleVerification:
    """Whether an evidence bundle's signature and hashes hold."""

    ok: bool
    bundle: str
    files: int = 0
    problems: list[str] = field(default_factory=list)
    key: str = ""  # the fingerprint the bundle was checked against
    key_source: str = ""  # where that fingerprint came from ("--key", "the repository's ...")


# what a genuine bundle's files are far below: a planted one larger is not read
_LIMITS = {SIGNATURE: 4096, SUMS: 1 << 20, DRILL_JSON: 16 << 20}


def _read_small(bundle: Path, name: str) -> bytes:
    """One of a bundle's own files, only a regular file (never through a link, never a
    FIFO) of a genuine one's size; an IntegrityError saying what it is otherwise."""
    limit = _LIMITS[name]
    try:
        fd = os.open(bundle / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise IntegrityError(f"{name} is missing") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IntegrityError(f"{name} is a symbolic link") from None
        raise IntegrityError(f"{name} cannot be read ({exc.strerror})") from None
    except ValueError:  # a path with a NUL byte (from a planted audit line)
        raise IntegrityError(f"{name} cannot be read (not a path)") from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise IntegrityError(f"{name} is not a regular file")
        if status.st_size > limit:
            raise IntegrityError(f"{name} is larger than a drill's ({status.st_size} bytes)")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise IntegrityError(f"{name} cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise IntegrityError(f"{name} is larger than a drill's")
    return data


def _signed_sums(bundle: Path) -> tuple[bytes, bytes]:
    """SHA256SUMS and its signature, read as they are (IntegrityError when either is
    missing or not what a bundle holds)."""
    sums = _read_small(bundle, SUMS)
    try:
        raw = base64.b64decode(_read_small(bundle, SIGNATURE).strip(), validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError(f"{SIGNATURE} is not a signature") from None
    if len(raw) != SIGNATURE_SIZE:
        # a pre-pinning bundle's bare signature names no signer to compare with a pin
        raise IntegrityError(f"{SIGNATURE} is not a pinned drill-key signature (made before pinning?)")
    return sums, raw


def _listed(sums: bytes) -> dict[str, str]:
    """SHA256SUMS as file name -> hex digest."""
    listed: dict[str, str] = {}
    try:
        text = sums.decode()
    except UnicodeDecodeError:
        raise IntegrityError(f"{SUMS} is not a list of hashes") from None
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    return listed


def _signer(signature: bytes) -> str:
    """The fingerprint of the key a signature names (not yet checked to have made it)."""
    try:
        return fingerprint(Signature.from_bytes(signature).public)
    except ValueError:
        raise IntegrityError("evidence signature is malformed") from None


def claimed(bundle: Path) -> tuple[str | None, str | None]:
    """When a bundle's drill.json says its drill started, and which drill it says it is,
    unchecked (None: it says nothing readable): where a refused bundle would stand among
    the genuine ones, and whether it is worth checking at all."""
    try:
        drill = json.loads(_read_small(bundle, DRILL_JSON))
    except (IntegrityError, ValueError, RecursionError):  # a planted "[[[[..." too
        return None, None
    if not isinstance(drill, dict):
        return None, None
    started, name = drill.get("started"), drill.get("drill")
    return (started if isinstance(started, str) else None), (name if isinstance(name, str) else None)


def parse_start(text: object) -> datetime | None:
    """A drill's start as a time to compare (None: not a time with a zone)."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def vouched_drill(bundle: Path, trusted: Mapping[str, datetime | None]) -> dict[str, Any]:
    """A bundle's drill.json, when SHA256SUMS is signed by one of the ``trusted`` drill keys
    (fingerprint -> when a rotation replaced it, None: in use) and lists exactly these bytes
    of it; an IntegrityError saying why not. A replaced key vouches only for drills that
    started before its replacement: whoever kept it cannot sign today's. Only drill.json is
    read: what `status` and `drill list` show of a drill. `verify_bundle` checks every file."""
    sums, signature = _signed_sums(bundle)
    data = _read_small(bundle, DRILL_JSON)
    signer = _signer(signature)
    if signer not in trusted:
        unread = "; ".join(getattr(trusted, "unread", ()))  # copies whose records were not read
        raise IntegrityError(
            f"signed by key {signer}, which no root-signed drill-key record publishes"
            + (
                f", or only a copy whose drill-key records could not be read here ({unread})"
                if unread
                else ""
            )
        )
    verify_bundle_signature(sums, signature, signer)
    if _listed(sums).get(DRILL_JSON) != hashlib.sha256(data).hexdigest():
        raise IntegrityError(f"{DRILL_JSON} was modified (SHA-256 mismatch)")
    try:
        drill = json.loads(data)
    except (ValueError, RecursionError):
        raise IntegrityError(f"{DRILL_JSON} is not a drill record") from None
    started = parse_start(drill.get("started")) if isinstance(drill, dict) else None
    if not isinstance(drill, dict) or started is None:
        raise IntegrityError(f"{DRILL_JSON} is not a drill record")
    replaced = trusted[signer]
    if replaced is not None and started >= replaced:
        raise IntegrityError(
            f"signed by key {signer}, replaced on {replaced.isoformat(timespec='seconds')}, "
            "for a drill that started after"
        )
    return drill


def verify_bundle(bundle: Path, pinned: str, key_source: str = "--key") -> BundleVerification:
    """Check an evidence bundle's signature against the pinned key fingerprint, and its
    file hashes; every problem found is listed."""
    result = BundleVerification(False, str(bundle), key=pinned, key_source=key_source)
    try:
        sums, signature = _signed_sums(bundle)
        listed = _listed(sums)
    except IntegrityError as exc:
        result.problems.append(exc.message)
        return result
    try:
        verify_bundle_signature(sums, signature, pinned)
    except IntegrityError as exc:
        result.problems.append(exc.message)
    present = set(_files(bundle))
    for name in sorted(set(listed) - present):
        result.problems.append(f"{name} is missing")
    for name in sorted(present - set(listed)):
        result.problems.append(f"{name} is not covered by SHA256SUMS")
    for name in sorted(present & set(listed)):
        if _sha256(bundle / name) != listed[name]:
            result.problems.append(f"{name} was modified (SHA-256 mismatch)")
    result.files = len(present)
    result.ok = not result.problems
    return result
