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
import hashlib
import json
import os
import secrets
from collections.abc import Collection
from dataclasses import dataclass, field
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
    """Write a drill's evidence bundle: JSON, logs, report, and their signed hashes; it
    appears at ``bundle`` whole (never over an existing directory)."""
    bundle.parent.mkdir(parents=True, exist_ok=True)
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
    os.rename(partial, bundle)  # refused onto a directory holding anything: nothing is replaced
    return bundle


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


def _signature(bundle: Path) -> bytes:
    text = (bundle / SIGNATURE).read_text().strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError(f"{SIGNATURE} is not a signature") from None
    if len(raw) != SIGNATURE_SIZE:
        # a pre-pinning bundle's bare signature names no signer to compare with a pin
        raise IntegrityError(f"{SIGNATURE} is not a pinned drill-key signature (made before pinning?)")
    return raw


def _listed(sums: str) -> dict[str, str]:
    """SHA256SUMS as file name -> hex digest."""
    listed: dict[str, str] = {}
    for line in sums.splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    return listed


def _signer(signature: bytes) -> str:
    """The fingerprint of the key a signature names (not yet checked to have made it)."""
    try:
        return fingerprint(Signature.from_bytes(signature).public)
    except ValueError:
        raise IntegrityError("evidence signature is malformed") from None


def vouched_drill(bundle: Path, trusted: Collection[str]) -> dict[str, Any]:
    """A bundle's drill.json, when SHA256SUMS is signed by one of the ``trusted`` drill keys
    (fingerprints) and lists exactly these bytes of it; an IntegrityError saying why not.
    Only drill.json is read: what `status` and `drill list` show of a drill. `verify_bundle`
    checks every file."""
    try:
        sums = (bundle / SUMS).read_bytes()
        signature = _signature(bundle)
        data = (bundle / DRILL_JSON).read_bytes()
    except FileNotFoundError as exc:
        raise IntegrityError(f"{Path(str(exc.filename)).name} is missing") from None
    except OSError as exc:
        raise IntegrityError(f"cannot read it: {exc.strerror}") from None
    signer = _signer(signature)
    if signer not in trusted:
        raise IntegrityError(f"signed by key {signer}, which no root-signed drill-key record publishes")
    verify_bundle_signature(sums, signature, signer)
    try:
        listed = _listed(sums.decode())
        drill = json.loads(data)
    except ValueError:  # UnicodeDecodeError is one
        raise IntegrityError(f"{DRILL_JSON} is not a drill record") from None
    if listed.get(DRILL_JSON) != hashlib.sha256(data).hexdigest():
        raise IntegrityError(f"{DRILL_JSON} was modified (SHA-256 mismatch)")
    if not isinstance(drill, dict) or not isinstance(drill.get("started"), str):
        raise IntegrityError(f"{DRILL_JSON} is not a drill record")
    return drill


def verify_bundle(bundle: Path, pinned: str, key_source: str = "--key") -> BundleVerification:
    """Check an evidence bundle's signature against the pinned key fingerprint, and its
    file hashes; every problem found is listed."""
    result = BundleVerification(False, str(bundle), key=pinned, key_source=key_source)
    try:
        sums = (bundle / SUMS).read_text()
        signature = _signature(bundle)
    except FileNotFoundError as exc:
        result.problems.append(f"{Path(str(exc.filename)).name} is missing")
        return result
    except OSError as exc:
        result.problems.append(f"cannot read the bundle: {exc.strerror}")
        return result
    except IntegrityError as exc:
        result.problems.append(exc.message)
        return result
    try:
        verify_bundle_signature(sums.encode(), signature, pinned)
    except IntegrityError as exc:
        result.problems.append(exc.message)
    listed = _listed(sums)
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
