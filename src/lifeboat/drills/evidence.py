"""Evidence bundles: drill.json, human reports, logs, SHA256SUMS signed with Ed25519.

`verify_bundle` needs nothing but the bundle (and optionally the trusted public key):
any changed byte, added or missing file, or bad signature fails it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifeboat.crypto.signing import public_hex, sign, verify

SUMS = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.sig"
PUBLIC_KEY = "drill-key.pub"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(bundle: Path) -> list[str]:
    return sorted(
        str(p.relative_to(bundle))
        for p in bundle.rglob("*")
        if p.is_file() and p.name not in (SUMS, SIGNATURE, PUBLIC_KEY)
    )


def write_bundle(
    bundle: Path,
    drill: dict[str, Any],
    logs: dict[str, str],
    report_md: str,
    report_html: str,
    key: Ed25519PrivateKey,
) -> Path:
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
    (bundle / SIGNATURE).write_text(sign(key, sums.encode()) + "\n")
    (bundle / PUBLIC_KEY).write_text(public_hex(key) + "\n")
    return bundle


@dataclass
class BundleVerification:
    ok: bool
    bundle: str
    files: int = 0
    problems: list[str] = field(default_factory=list)
    public_key: str = ""


def verify_bundle(bundle: Path, trusted_key: str | None = None) -> BundleVerification:
    result = BundleVerification(False, str(bundle))
    try:
        sums = (bundle / SUMS).read_text()
        signature = (bundle / SIGNATURE).read_text().strip()
        public = (bundle / PUBLIC_KEY).read_text().strip()
    except FileNotFoundError as exc:
        result.problems.append(f"{Path(str(exc.filename)).name} is missing")
        return result
    except OSError as exc:
        result.problems.append(f"cannot read the bundle: {exc.strerror}")
        return result
    result.public_key = public
    if trusted_key and public != trusted_key:
        result.problems.append("signed by a key that is not the repository's drill key")
    if not verify(public, sums.encode(), signature):
        result.problems.append("signature does not match SHA256SUMS")
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
