"""Evidence bundles: drill.json, human reports, logs, SHA256SUMS signed with Ed25519.

`verify_bundle` needs the bundle and the fingerprint of the key it must be signed by (pinned
by the auditor, or read from the repository's root-signed drill-key record): any changed
byte, added or missing file, or a signature by any other key fails it. The signer's public
key travels in the signature only to be compared with the pin (crypto/pinning.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifeboat.crypto.pinning import sign_bundle, verify_bundle_signature
from lifeboat.crypto.signed import SIGNATURE_SIZE
from lifeboat.errors import IntegrityError

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
    """Write a drill's evidence bundle: JSON, logs, report, and their signed hashes."""
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "drill.json").write_text(json.dumps(drill, indent=2, sort_keys=True, default=str) + "\n")
    (bundle / "report.md").write_text(report_md)
    (bundle / "report.html").write_text(report_html)
    if logs:
        (bundle / "logs").mkdir(exist_ok=True)
        for name, text in logs.items():
            (bundle / "logs" / f"{name}.log").write_text(text)
    sums = "".join(f"{_sha256(bundle / name)}  {name}\n" for name in _files(bundle))
    (bundle / SUMS).write_text(sums)
    (bundle / SIGNATURE).write_text(base64.b64encode(sign_bundle(key, sums.encode())).decode() + "\n")
    return bundle


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
    listed: dict[str, str] = {}
    for line in sums.splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
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
